//! Domains on the Docker backend through Caddy's admin API. railyard owns two named servers (`railyard` for HTTPS
//! and `railyard-http` for plain HTTP and redirects), its routes (ids `railyard:<project>:<host>`) and its TLS
//! automation policies; everything else in Caddy's config is kept as found. Config is pushed only when it changed.
//! Each route carries its own last-applied spec in a `vars` handler, as Kubernetes objects carry annotations.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::model::kinds::TlsMode;
use crate::model::{DomainSpec, Environment, ObservedDomain};

pub const HTTPS_SERVER: &str = "railyard";
pub const HTTP_SERVER: &str = "railyard-http";
const CATCH_ALL: &str = "railyard:catch-all";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Caddy is and where railyard's servers listen.
#[derive(Debug, Clone)]
pub struct CaddySettings {
    /// Admin API, e.g. `http://127.0.0.1:2019`.
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

/// A Caddy reached through its admin API.
#[derive(Debug, Clone)]
pub struct Caddy {
    settings: CaddySettings,
    client: reqwest::Client,
}

impl Caddy {
    pub fn new(settings: CaddySettings) -> Caddy {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap_or_default();
        Caddy { settings, client }
    }

    pub fn settings(&self) -> &CaddySettings {
        &self.settings
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> ProxyError {
        ProxyError::Unreachable { admin: self.settings.admin.clone(), reason: error.to_string() }
    }

    async fn config(&self) -> Result<Value, ProxyError> {
        let url = format!("{}/config/", self.settings.admin.trim_end_matches('/'));
        let response = self.client.get(url).send().await.map_err(|e| self.unreachable(e))?;
        response.json::<Value>().await.map_err(|e| self.unreachable(e))
    }

    /// railyard's routes of `env` as they are in Caddy now.
    pub async fn observe(&self, env: &Environment) -> Result<BTreeMap<String, ObservedDomain>, ProxyError> {
        Ok(observed_domains(&self.config().await?, env))
    }

    /// Routes `domains` of `env` to `upstreams` (per domain host, `host:port` of each serving replica). Returns
    /// whether a new config was pushed.
    pub async fn sync(
        &self,
        env: &Environment,
        domains: &[DomainSpec],
        upstreams: &BTreeMap<String, Vec<String>>,
    ) -> Result<bool, ProxyError> {
        let current = self.config().await?;
        let wanted = with_domains(&current, env, domains, upstreams, &self.settings);
        if wanted == current {
            return Ok(false);
        }
        let url = format!("{}/load", self.settings.admin.trim_end_matches('/'));
        let response = self.client.post(url).json(&wanted).send().await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(ProxyError::Refused { status, body: response.text().await.unwrap_or_default() });
        }
        Ok(true)
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
            "load_balancing": { "selection_policy": { "policy": "round_robin" }, "try_duration": "2s" },
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
    let prefix = route_prefix(env);
    let mut config = if config.is_object() { config.clone() } else { json!({}) };
    let keep = |server: &str| -> Vec<Value> {
        routes_of(&config, server)
            .into_iter()
            .filter(|r| !is_ours(r, &prefix) && r["@id"] != CATCH_ALL)
            .cloned()
            .collect()
    };
    let (mut https_routes, mut http_routes) = (keep(HTTPS_SERVER), keep(HTTP_SERVER));
    let mut sorted: Vec<&DomainSpec> = domains.iter().collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    for spec in &sorted {
        let route = route(env, spec, upstreams.get(&spec.host).map(Vec::as_slice).unwrap_or_default());
        if spec.tls == TlsMode::Off {
            http_routes.insert(0, route);
        } else {
            https_routes.insert(0, route);
            http_routes.insert(0, redirect(env, spec));
        }
    }
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
    set_policies(&mut config, env, &sorted, settings);
    config
}

/// TLS automation: `internal` hosts get Caddy's local CA, `auto` hosts ACME with the Project's email.
fn set_policies(config: &mut Value, env: &Environment, domains: &[&DomainSpec], settings: &CaddySettings) {
    let prefix = route_prefix(env);
    let automation = ensure_object(config, &["apps", "tls", "automation"]);
    let mut policies: Vec<Value> = automation
        .get("policies")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter(|p| !is_ours(p, &prefix)).cloned().collect())
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
        policies.insert(
            0,
            json!({ "@id": format!("{prefix}{}:tls", spec.host), "subjects": subjects, "issuers": [issuer] }),
        );
    }
    automation.insert("policies".to_owned(), Value::Array(policies));
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
}
