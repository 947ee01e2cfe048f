//! Domains on the Docker backend through Caddy's admin API. railyard owns two named servers (`railyard` for HTTPS
//! and `railyard-http` for plain HTTP and redirects), its routes (ids `railyard:<project>:<host>`) and its TLS
//! automation policies; everything else in Caddy's config is kept as found. Config is pushed only when it changed.
//! Each route carries its own last-applied spec in a `vars` handler, as Kubernetes objects carry annotations.
//!
//! Every read-modify-write of Caddy's config holds one lock, so apps switching traffic in parallel never lose each
//! other's routes. Replicas taken out of the routes stay referenced by a route no request reaches
//! (`railyard:draining`, after the catch-all) until railyard has waited for Caddy's count of requests in flight to
//! them to reach zero: Caddy keys that count by dial address and forgets it once no handler lists the address.

mod admin;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use self::admin::AdminEndpoint;

use crate::model::kinds::TlsMode;
use crate::model::{DomainSpec, Environment, ObservedDomain};

pub const HTTPS_SERVER: &str = "railyard";
pub const HTTP_SERVER: &str = "railyard-http";
const CATCH_ALL: &str = "railyard:catch-all";
const DRAINING: &str = "railyard:draining";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Loading a config makes Caddy provision all of it, which takes longer than a read.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest wait before retired replicas stop: requests Caddy accepted just before the switch and has not yet sent.
pub const DRAIN_FLOOR: Duration = Duration::from_millis(100);
/// Longest wait for requests in flight to retired replicas, as Kubernetes' default termination grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Where Caddy is and where railyard's servers listen.
#[derive(Debug, Clone)]
pub struct CaddySettings {
    /// Admin API: `http://127.0.0.1:2019`, or `unix:///run/caddy/admin.sock` for a socket only railyard reaches.
    pub admin: String,
    /// Listen address of the plain HTTP server, e.g. `:80`.
    pub http: String,
    /// Listen address of the HTTPS server, e.g. `:443`.
    pub https: String,
    /// Contact for ACME (`tls: auto`).
    pub acme_email: Option<String>,
    /// How Caddy reaches the replicas.
    pub upstreams: UpstreamMode,
}

/// The two placements of Caddy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Caddy on the host: replicas through their published ports on the host.
    Host,
    /// Caddy in a container: railyard connects that container to each environment's network and Caddy dials the
    /// replicas by container name.
    Network { caddy_container: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach Caddy's admin API at {admin}: {reason}; start Caddy or point --caddy-admin at it")]
    Unreachable { admin: String, reason: String },
    #[error("Caddy refused the config ({status}): {body}")]
    Refused { status: u16, body: String },
}

/// A Caddy reached through its admin API. Clones share one lock, so that route changes of apps applied in parallel
/// are read-modify-writes one after another and never lose each other's routes.
#[derive(Debug, Clone)]
pub struct Caddy {
    settings: CaddySettings,
    endpoint: AdminEndpoint,
    /// Held across each read-modify-write of Caddy's config; guards the dials still draining.
    draining: Arc<Mutex<BTreeSet<String>>>,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switch {
    /// A new config was loaded.
    pub pushed: bool,
    /// Dials that no longer receive new requests; pass them to [`Caddy::wait_drained`] before stopping them.
    pub retired: Vec<String>,
}

impl Caddy {
    pub fn new(settings: CaddySettings) -> Caddy {
        let endpoint = AdminEndpoint::parse(&settings.admin);
        Caddy { settings, endpoint, draining: Arc::default() }
    }

    pub fn settings(&self) -> &CaddySettings {
        &self.settings
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> ProxyError {
        ProxyError::Unreachable { admin: self.settings.admin.clone(), reason: error.to_string() }
    }

    async fn get(&self, path: &str) -> Result<Value, ProxyError> {
        let response =
            self.endpoint.request("GET", path, None, REQUEST_TIMEOUT).await.map_err(|e| self.unreachable(e))?;
        if !(200..300).contains(&response.status) {
            return Err(ProxyError::Refused {
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        serde_json::from_slice(&response.body).map_err(|e| self.unreachable(format!("GET {path}: {e}")))
    }

    async fn config(&self) -> Result<Value, ProxyError> {
        self.get("/config/").await
    }

    /// railyard's routes of `env` as they are in Caddy now.
    pub async fn observe(&self, env: &Environment) -> Result<BTreeMap<String, ObservedDomain>, ProxyError> {
        Ok(observed_domains(&self.config().await?, env))
    }

    /// Routes `domains` of `env` to `upstreams` (per domain host, `host:port` of each serving replica); `env`'s
    /// other routes are removed. Pushes only when the config changed.
    pub async fn sync(
        &self,
        env: &Environment,
        domains: &[DomainSpec],
        upstreams: &BTreeMap<String, Vec<String>>,
    ) -> Result<Switch, ProxyError> {
        self.push(env, domains, upstreams, None).await
    }

    /// As [`Caddy::sync`], but only the routes of `domains` change: an app moving its own traffic leaves the other
    /// domains of the environment as they are, so apps updated in parallel do not undo each other's switch.
    pub async fn switch(
        &self,
        env: &Environment,
        domains: &[DomainSpec],
        upstreams: &BTreeMap<String, Vec<String>>,
    ) -> Result<Switch, ProxyError> {
        let hosts: BTreeSet<String> = domains.iter().map(|domain| domain.host.clone()).collect();
        self.push(env, domains, upstreams, Some(&hosts)).await
    }

    async fn push(
        &self,
        env: &Environment,
        domains: &[DomainSpec],
        upstreams: &BTreeMap<String, Vec<String>>,
        scope: Option<&BTreeSet<String>>,
    ) -> Result<Switch, ProxyError> {
        let mut draining = self.draining.lock().await;
        let current = self.config().await?;
        let before = dials_of(&current, env);
        let mut wanted = with_domains_in(&current, env, domains, upstreams, &self.settings, scope);
        let after = dials_of(&wanted, env);
        let retired: Vec<String> = before.difference(&after).cloned().collect();
        let mut keep_counting = draining.clone();
        keep_counting.extend(retired.iter().cloned());
        set_draining(&mut wanted, &keep_counting);
        if wanted == current {
            return Ok(Switch { pushed: false, retired });
        }
        let body = serde_json::to_vec(&wanted).map_err(|e| self.unreachable(e))?;
        let response =
            self.endpoint.request("POST", "/load", Some(body), LOAD_TIMEOUT).await.map_err(|e| self.unreachable(e))?;
        if !(200..300).contains(&response.status) {
            return Err(ProxyError::Refused {
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        *draining = keep_counting;
        Ok(Switch { pushed: true, retired })
    }

    /// Waits until Caddy has no request in flight to any of `dials` (its `num_requests` per upstream), at least
    /// [`DRAIN_FLOOR`] for requests Caddy accepted but has not yet sent, and at most `timeout`. Returns whether they
    /// drained in time. The dials stop being counted afterwards.
    pub async fn wait_drained(&self, dials: &[String], timeout: Duration) -> Result<bool, ProxyError> {
        if dials.is_empty() {
            return Ok(true);
        }
        let started = tokio::time::Instant::now();
        tokio::time::sleep(DRAIN_FLOOR).await;
        let drained = async {
            loop {
                let busy = in_flight(&self.get("/reverse_proxy/upstreams").await?, dials);
                if busy == 0 {
                    return Ok(true);
                }
                if started.elapsed() >= timeout {
                    tracing::warn!(busy, ?dials, "requests still in flight to retired replicas; stopping them anyway");
                    return Ok(false);
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
        .await;
        // Whatever the outcome, the caller stops these replicas now: Caddy need not count them any longer.
        let mut draining = self.draining.lock().await;
        for dial in dials {
            draining.remove(dial);
        }
        drained
    }
}

impl Caddy {
    /// After a switch, waits for the retired replicas' requests to finish (at most [`DRAIN_TIMEOUT`]); a Caddy that
    /// cannot tell is given the timeout's floor only, as stopping is still safer than keeping old replicas forever.
    pub async fn drain(&self, switch: &Switch) {
        match self.wait_drained(&switch.retired, DRAIN_TIMEOUT).await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot see the requests in flight to retired replicas"),
        }
    }
}

/// Requests in flight to `dials` according to Caddy's `GET /reverse_proxy/upstreams`.
fn in_flight(upstreams: &Value, dials: &[String]) -> u64 {
    upstreams
        .as_array()
        .into_iter()
        .flatten()
        .filter(|upstream| upstream["address"].as_str().is_some_and(|address| dials.iter().any(|d| d == address)))
        .filter_map(|upstream| upstream["num_requests"].as_u64())
        .sum()
}

/// Upstream dials of `env`'s routes in `config`.
fn dials_of(config: &Value, env: &Environment) -> BTreeSet<String> {
    let prefix = route_prefix(env);
    [HTTPS_SERVER, HTTP_SERVER]
        .iter()
        .flat_map(|server| routes_of(config, server))
        .filter(|route| is_ours(route, &prefix))
        .flat_map(|route| route["handle"].as_array().into_iter().flatten())
        .flat_map(|handler| handler["upstreams"].as_array().into_iter().flatten())
        .filter_map(|upstream| upstream["dial"].as_str().map(str::to_owned))
        .collect()
}

/// Keeps `dials` known to Caddy after they left every route: a route that no request reaches (it follows the
/// terminal catch-all) still references them, so Caddy keeps counting the requests in flight to them.
fn set_draining(config: &mut Value, dials: &BTreeSet<String>) {
    let Some(routes) = config["apps"]["http"]["servers"][HTTPS_SERVER]["routes"].as_array_mut() else { return };
    routes.retain(|route| route["@id"] != DRAINING);
    if !dials.is_empty() {
        routes.push(json!({
            "@id": DRAINING,
            "handle": [{ "handler": "reverse_proxy", "upstreams": dials.iter().map(|dial| json!({ "dial": dial })).collect::<Vec<_>>() }],
        }));
    }
}

fn route_prefix(env: &Environment) -> String {
    format!("railyard:{}:", env.project)
}

/// The route of one domain: its hosts, round-robin over the serving replicas, and its spec in `vars`.
pub fn route(env: &Environment, spec: &DomainSpec, upstreams: &[String]) -> Value {
    let hosts: Vec<&String> = std::iter::once(&spec.host).chain(&spec.aliases).collect();
    let proxy = if upstreams.is_empty() {
        json!({ "handler": "static_response", "status_code": 503, "body": format!("no healthy replica of {}", spec.app) })
    } else {
        json!({
            "handler": "reverse_proxy",
            "upstreams": upstreams.iter().map(|dial| json!({ "dial": dial })).collect::<Vec<_>>(),
            // A request that meets a replica just as it stops is tried again on another one; requests that may have
            // changed something are retried only when no connection was made.
            "load_balancing": {
                "selection_policy": { "policy": "round_robin" },
                "try_duration": "5s",
                "try_interval": "50ms",
                "retry_match": [{ "method": ["GET", "HEAD", "OPTIONS"] }],
            },
        })
    };
    json!({
        "@id": format!("{}{}", route_prefix(env), spec.host),
        "match": [{ "host": hosts }],
        "handle": [{ "handler": "vars", "railyard_spec": serde_json::to_string(spec).unwrap_or_default(), "railyard_env": env.name }, proxy],
        "terminal": true,
    })
}

fn catch_all() -> Value {
    json!({ "@id": CATCH_ALL, "handle": [{ "handler": "static_response", "status_code": 404, "body": "no app here\n" }], "terminal": true })
}

fn redirect(env: &Environment, spec: &DomainSpec) -> Value {
    let hosts: Vec<&String> = std::iter::once(&spec.host).chain(&spec.aliases).collect();
    json!({
        "@id": format!("{}{}:redirect", route_prefix(env), spec.host),
        "match": [{ "host": hosts }],
        "handle": [{ "handler": "static_response", "status_code": 308, "headers": { "Location": ["https://{http.request.host}{http.request.uri}"] } }],
        "terminal": true,
    })
}

fn is_ours(route: &Value, prefix: &str) -> bool {
    route["@id"].as_str().is_some_and(|id| id.starts_with(prefix))
}

/// Whether a route or policy of ours (ids `<prefix><host>[:redirect|:tls]`) is rewritten by a push over `scope`.
fn in_scope(object: &Value, prefix: &str, scope: Option<&BTreeSet<String>>) -> bool {
    let Some(rest) = object["@id"].as_str().and_then(|id| id.strip_prefix(prefix)) else { return false };
    scope.is_none_or(|hosts| rest.split(':').next().is_some_and(|host| hosts.contains(host)))
}

fn routes_of<'a>(config: &'a Value, server: &str) -> Vec<&'a Value> {
    config["apps"]["http"]["servers"][server]["routes"]
        .as_array()
        .map(|routes| routes.iter().collect())
        .unwrap_or_default()
}

/// Domains of `env` found in `config`, read back from the routes' `vars`.
pub fn observed_domains(config: &Value, env: &Environment) -> BTreeMap<String, ObservedDomain> {
    let prefix = route_prefix(env);
    [HTTPS_SERVER, HTTP_SERVER]
        .iter()
        .flat_map(|server| routes_of(config, server))
        .filter(|route| is_ours(route, &prefix))
        .filter_map(|route| {
            let spec = route["handle"][0]["railyard_spec"].as_str()?;
            let spec: DomainSpec = serde_json::from_str(spec).ok()?;
            Some((spec.host.clone(), ObservedDomain { env: env.name.clone(), last_applied: spec }))
        })
        .collect()
}

/// `config` with `env`'s domains replaced by `domains`; other projects', other people's routes and all other config
/// kept as found.
pub fn with_domains(
    config: &Value,
    env: &Environment,
    domains: &[DomainSpec],
    upstreams: &BTreeMap<String, Vec<String>>,
    settings: &CaddySettings,
) -> Value {
    with_domains_in(config, env, domains, upstreams, settings, None)
}

/// [`with_domains`] replacing only the routes of the hosts in `scope` (all of `env`'s when `None`).
fn with_domains_in(
    config: &Value,
    env: &Environment,
    domains: &[DomainSpec],
    upstreams: &BTreeMap<String, Vec<String>>,
    settings: &CaddySettings,
    scope: Option<&BTreeSet<String>>,
) -> Value {
    let prefix = route_prefix(env);
    let mut config = if config.is_object() { config.clone() } else { json!({}) };
    // The environment's routes come first, in one order whatever was pushed before, so equal inputs give equal
    // configs; other routes keep their order after them.
    let split = |server: &str| -> (Vec<Value>, Vec<Value>) {
        routes_of(&config, server)
            .into_iter()
            .filter(|r| !in_scope(r, &prefix, scope) && r["@id"] != CATCH_ALL && r["@id"] != DRAINING)
            .cloned()
            .partition(|r| is_ours(r, &prefix))
    };
    let (mut https_ours, https_others) = split(HTTPS_SERVER);
    let (mut http_ours, http_others) = split(HTTP_SERVER);
    let mut sorted: Vec<&DomainSpec> = domains.iter().collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    for spec in &sorted {
        let route = route(env, spec, upstreams.get(&spec.host).map(Vec::as_slice).unwrap_or_default());
        if spec.tls == TlsMode::Off {
            http_ours.push(route);
        } else {
            https_ours.push(route);
            http_ours.push(redirect(env, spec));
        }
    }
    let in_order = |mut ours: Vec<Value>, others: Vec<Value>| -> Vec<Value> {
        ours.sort_by(|a, b| b["@id"].as_str().cmp(&a["@id"].as_str()));
        ours.extend(others);
        ours
    };
    let mut https_routes = in_order(https_ours, https_others);
    let mut http_routes = in_order(http_ours, http_others);
    https_routes.push(catch_all());
    http_routes.push(catch_all());
    let plain_hosts: Vec<Value> = [&https_routes, &http_routes]
        .iter()
        .flat_map(|routes| routes.iter())
        .filter(|route| route["@id"].as_str().is_some_and(|id| id.starts_with("railyard:")))
        .filter(|route| {
            route["handle"][0]["railyard_spec"]
                .as_str()
                .and_then(|s| serde_json::from_str::<DomainSpec>(s).ok())
                .is_some_and(|s| s.tls == TlsMode::Off)
        })
        .flat_map(|route| route["match"][0]["host"].as_array().cloned().unwrap_or_default())
        .collect();
    let http = ensure_object(&mut config, &["apps", "http"]);
    http.insert("http_port".to_owned(), json!(port_of(&settings.http, 80)));
    http.insert("https_port".to_owned(), json!(port_of(&settings.https, 443)));
    let servers = ensure_object(&mut config, &["apps", "http", "servers"]);
    servers.insert(
        HTTPS_SERVER.to_owned(),
        json!({ "listen": [settings.https], "routes": https_routes, "automatic_https": { "skip": plain_hosts } }),
    );
    servers.insert(HTTP_SERVER.to_owned(), json!({ "listen": [settings.http], "routes": http_routes }));
    set_policies(&mut config, env, &sorted, settings, scope);
    config
}

/// TLS automation: `internal` hosts get Caddy's local CA, `auto` hosts ACME with the Project's email.
fn set_policies(
    config: &mut Value,
    env: &Environment,
    domains: &[&DomainSpec],
    settings: &CaddySettings,
    scope: Option<&BTreeSet<String>>,
) {
    let prefix = route_prefix(env);
    let automation = ensure_object(config, &["apps", "tls", "automation"]);
    let (mut ours, others): (Vec<Value>, Vec<Value>) = automation
        .get("policies")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter(|p| !in_scope(p, &prefix, scope)).cloned().partition(|p| is_ours(p, &prefix)))
        .unwrap_or_default();
    for spec in domains.iter().filter(|spec| spec.tls != TlsMode::Off) {
        let subjects: Vec<&String> = std::iter::once(&spec.host).chain(&spec.aliases).collect();
        let issuer = match spec.tls {
            TlsMode::Internal => json!({ "module": "internal" }),
            _ => match spec.acme_email.as_ref().or(settings.acme_email.as_ref()) {
                Some(email) => json!({ "module": "acme", "email": email }),
                None => json!({ "module": "acme" }),
            },
        };
        ours.push(json!({ "@id": format!("{prefix}{}:tls", spec.host), "subjects": subjects, "issuers": [issuer] }));
    }
    ours.sort_by(|a, b| b["@id"].as_str().cmp(&a["@id"].as_str()));
    ours.extend(others);
    automation.insert("policies".to_owned(), Value::Array(ours));
}

fn port_of(listen: &str, default: u16) -> u16 {
    listen.rsplit(':').next().and_then(|port| port.parse().ok()).unwrap_or(default)
}

/// The object at `path`, created (as empty objects) where missing or not an object.
fn ensure_object<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut current = value;
    for key in path {
        if !current.is_object() {
            *current = json!({});
        }
        let object = current.as_object_mut().expect("made an object above");
        current = object.entry((*key).to_owned()).or_insert_with(|| json!({}));
    }
    if !current.is_object() {
        *current = json!({});
    }
    current.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CaddySettings {
        CaddySettings {
            admin: "http://127.0.0.1:2019".into(),
            http: ":8080".into(),
            https: ":8443".into(),
            acme_email: Some("ops@example.com".into()),
            upstreams: UpstreamMode::Host,
        }
    }

    fn domain(host: &str, tls: TlsMode) -> DomainSpec {
        DomainSpec {
            host: host.into(),
            aliases: vec![format!("www.{host}")],
            app: "web".into(),
            port: "http".into(),
            container_port: 8080,
            tls,
            acme_email: None,
        }
    }

    #[test]
    fn routes_read_back_as_the_specs_that_made_them() {
        let env = Environment::production("shop");
        let domains = vec![domain("shop.example.com", TlsMode::Internal), domain("plain.example.com", TlsMode::Off)];
        let upstreams = BTreeMap::from([("shop.example.com".to_owned(), vec!["127.0.0.1:32768".to_owned()])]);
        let config = with_domains(&Value::Null, &env, &domains, &upstreams, &settings());
        let observed = observed_domains(&config, &env);
        assert_eq!(observed.len(), 2);
        assert_eq!(observed["shop.example.com"].last_applied, domains[0]);
        assert_eq!(
            config["apps"]["http"]["servers"]["railyard"]["automatic_https"]["skip"],
            json!(["plain.example.com", "www.plain.example.com"])
        );
        assert_eq!(config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"], "internal");
        // The same input gives the same config: nothing is pushed twice.
        assert_eq!(with_domains(&config, &env, &domains, &upstreams, &settings()), config);
    }

    #[test]
    fn acme_domains_carry_the_projects_contact() {
        let env = Environment::production("shop");
        let mut spec = domain("shop.example.com", TlsMode::Auto);
        spec.acme_email = Some("certs@shop.example".into());
        let config = with_domains(&Value::Null, &env, &[spec], &BTreeMap::new(), &settings());
        let issuer = &config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0];
        assert_eq!((issuer["module"].as_str(), issuer["email"].as_str()), (Some("acme"), Some("certs@shop.example")));
    }

    #[test]
    fn foreign_routes_and_other_projects_survive() {
        let env = Environment::production("shop");
        let other = Environment::production("blog");
        let upstreams = BTreeMap::new();
        let mut config =
            with_domains(&Value::Null, &other, &[domain("blog.example.com", TlsMode::Off)], &upstreams, &settings());
        if let Some(routes) = config["apps"]["http"]["servers"]["railyard-http"]["routes"].as_array_mut() {
            routes.insert(0, json!({ "match": [{ "host": ["by-hand.example.com"] }], "handle": [{ "handler": "static_response", "body": "mine" }] }));
        }
        let config = with_domains(&config, &env, &[domain("shop.example.com", TlsMode::Off)], &upstreams, &settings());
        let routes = routes_of(&config, HTTP_SERVER);
        let hosts: Vec<&Value> = routes.iter().map(|r| &r["match"][0]["host"][0]).collect();
        assert_eq!(
            hosts,
            [&json!("shop.example.com"), &json!("by-hand.example.com"), &json!("blog.example.com"), &Value::Null]
        );
        let removed = with_domains(&config, &env, &[], &upstreams, &settings());
        assert!(observed_domains(&removed, &env).is_empty());
        assert_eq!(observed_domains(&removed, &other).len(), 1);
        assert_eq!(routes_of(&removed, HTTP_SERVER).len(), 3);
    }

    #[test]
    fn the_projects_acme_email_reaches_caddys_acme_issuer() {
        let files = [
            crate::model::RepoFile::text(
                "railyard.yaml",
                "kind: Project\nname: shop\nproxy: { acmeEmail: certs@shop.example }\n",
            ),
            crate::model::RepoFile::text(
                "apps/web.yaml",
                "kind: App\nname: web\nimage: web:1\nports: [{ name: http, port: 8080 }]\n",
            ),
            crate::model::RepoFile::text(
                "domains/shop.yaml",
                "kind: Domain\nhost: shop.example.com\napp: web\nport: http\ntls: auto\n---\n\
                 kind: Domain\nhost: internal.example.com\napp: web\nport: http\ntls: internal\n",
            ),
        ];
        let config = crate::model::load(&files).expect("valid config");
        let env = Environment::production("shop");
        let desired = config.desired(&env, None);
        let domains: Vec<DomainSpec> = desired.domains.values().cloned().collect();
        let mut settings = settings();
        settings.acme_email = None;
        let caddy = with_domains(&Value::Null, &env, &domains, &BTreeMap::new(), &settings);
        let policies = caddy["apps"]["tls"]["automation"]["policies"].as_array().expect("policies");
        let issuer_of = |host: &str| {
            policies.iter().find(|p| p["subjects"][0] == host).map(|p| p["issuers"][0].clone()).expect("a policy")
        };
        assert_eq!(issuer_of("shop.example.com"), json!({ "module": "acme", "email": "certs@shop.example" }));
        assert_eq!(issuer_of("internal.example.com"), json!({ "module": "internal" }));
    }

    #[test]
    fn an_apps_switch_leaves_the_other_domains_of_its_environment_alone() {
        let env = Environment::production("shop");
        let (web, api) = (domain("web.example.com", TlsMode::Off), domain("api.example.com", TlsMode::Internal));
        let before = BTreeMap::from([
            ("web.example.com".to_owned(), vec!["127.0.0.1:1001".to_owned()]),
            ("api.example.com".to_owned(), vec!["127.0.0.1:2001".to_owned()]),
        ]);
        let config = with_domains(&Value::Null, &env, &[web.clone(), api.clone()], &before, &settings());
        // The web app switched with a view of the api app that is already stale: the api route stays as it is.
        let mut stale = before.clone();
        stale.insert("web.example.com".to_owned(), vec!["127.0.0.1:1002".to_owned()]);
        stale.insert("api.example.com".to_owned(), vec!["127.0.0.1:9999".to_owned()]);
        let hosts = BTreeSet::from(["web.example.com".to_owned()]);
        let switched = with_domains_in(&config, &env, std::slice::from_ref(&web), &stale, &settings(), Some(&hosts));
        assert_eq!(
            dials_of(&switched, &env),
            BTreeSet::from(["127.0.0.1:1002".to_owned(), "127.0.0.1:2001".to_owned()])
        );
        assert_eq!(observed_domains(&switched, &env).len(), 2);
        // The same routes pushed in full give the same config: no push after a switch when nothing else changed.
        let after = BTreeMap::from([
            ("web.example.com".to_owned(), vec!["127.0.0.1:1002".to_owned()]),
            ("api.example.com".to_owned(), vec!["127.0.0.1:2001".to_owned()]),
        ]);
        assert_eq!(with_domains(&switched, &env, &[web, api], &after, &settings()), switched);
    }

    #[test]
    fn retired_dials_stay_counted_behind_the_catch_all_until_drained() {
        let env = Environment::production("shop");
        let upstreams = BTreeMap::from([("web.example.com".to_owned(), vec!["127.0.0.1:1002".to_owned()])]);
        let mut config =
            with_domains(&Value::Null, &env, &[domain("web.example.com", TlsMode::Internal)], &upstreams, &settings());
        set_draining(&mut config, &BTreeSet::from(["127.0.0.1:1001".to_owned()]));
        let routes = routes_of(&config, HTTPS_SERVER);
        assert_eq!(routes[routes.len() - 2]["@id"], CATCH_ALL, "no request reaches the draining route");
        assert_eq!(routes[routes.len() - 1]["handle"][0]["upstreams"], json!([{ "dial": "127.0.0.1:1001" }]));
        assert!(!dials_of(&config, &env).contains("127.0.0.1:1001"));
        set_draining(&mut config, &BTreeSet::new());
        assert!(routes_of(&config, HTTPS_SERVER).iter().all(|route| route["@id"] != DRAINING));
        let counts = json!([
            { "address": "127.0.0.1:1001", "num_requests": 2, "fails": 0 },
            { "address": "127.0.0.1:1002", "num_requests": 5, "fails": 0 },
        ]);
        assert_eq!(in_flight(&counts, &["127.0.0.1:1001".to_owned()]), 2);
        assert_eq!(in_flight(&counts, &["127.0.0.1:3".to_owned()]), 0);
    }
}
