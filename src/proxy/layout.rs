//! How railyard's domains are written into Caddy's config (pure: JSON in, JSON out).
//!
//! Caddy provisions its whole config again on every change, so a route change costs what provisioning everything
//! costs: with one route and one `reverse_proxy` per domain, 1,000 domains took ~200 ms per change. Here each
//! environment has one route per server instead, whatever its number of domains:
//!
//! - its host matcher lists the environment's hosts (so Caddy's automatic HTTPS still sees every TLS host);
//! - a `map` handler turns the request's host into placeholders: the number of serving replicas, the app, and each
//!   replica's dial as `{railyard.hN}`/`{railyard.pN}` (host, port); the primary host's row also carries the rest
//!   of its `DomainSpec` (port, TLS mode, …: host, aliases and app are the rows themselves), read back as the
//!   last-applied spec, as Kubernetes objects carry annotations. It is a JSON object, not a string of JSON: Caddy
//!   decodes the whole config on every change, and escaped strings cost it about twice as much;
//! - one `reverse_proxy` per replica count in use, whose `dynamic_upstreams` read those placeholders.
//!
//! Dynamic upstreams are what keep the drain exact: Caddy counts requests in flight by the *resolved* address of a
//! dynamic upstream (`GET /reverse_proxy/upstreams` lists `127.0.0.1:32768` while requests to it are in flight),
//! whereas a static upstream with a placeholder dial is counted as the placeholder, for every app at once.
//!
//! ids: `railyard:<project>:@https` (TLS hosts, HTTPS server), `railyard:<project>:@http` (plain hosts) and
//! `railyard:<project>:@redirect` (TLS hosts' redirect to HTTPS), both on the HTTP server, and one TLS automation
//! policy per TLS host, `railyard:<project>:<host>:tls`. A host name contains no `@`, so the ids never collide.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::CaddySettings;
use crate::model::kinds::TlsMode;
use crate::model::{DomainSpec, Environment, ObservedDomain};

pub const HTTPS_SERVER: &str = "railyard";
pub const HTTP_SERVER: &str = "railyard-http";
const CATCH_ALL: &str = "railyard:catch-all";
/// Keeps retired dials known to Caddy until they drained; see [`set_draining`].
const DRAINING: &str = "railyard:draining";
const HTTPS_ROUTE: &str = "@https";
const HTTP_ROUTE: &str = "@http";
const REDIRECT_ROUTE: &str = "@redirect";

/// The map's destinations before the dials, in this order: the number of serving replicas, the app, the rest of
/// the domain's spec, and the domain's primary host (for aliases too). Each environment's map has placeholders of
/// its own (`{railyard.<project>.<role>}`): Caddy asks every map that ran, in route order, and a map answers "nothing"
/// for a host it does not know, which would hide the maps after it if the names were shared.
const COUNT: &str = "n";
const APP: &str = "app";
const SPEC: &str = "domain";
const PRIMARY: &str = "host";

fn placeholder(env: &Environment, role: &str) -> String {
    format!("{{railyard.{}.{role}}}", env.project)
}

/// Whether destination `name` is the placeholder of `role` (this layout's, or the shared one before it).
fn plays(name: &str, role: &str) -> bool {
    name.strip_prefix("{railyard.")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|rest| rest == role || rest.ends_with(&format!(".{role}")))
}

/// One domain of an environment as routed: its spec and where its serving replicas are dialled (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Routed {
    spec: DomainSpec,
    dials: Vec<String>,
}

fn route_prefix(env: &Environment) -> String {
    format!("railyard:{}:", env.project)
}

fn routes_of<'a>(config: &'a Value, server: &str) -> Vec<&'a Value> {
    config["apps"]["http"]["servers"][server]["routes"]
        .as_array()
        .map(|routes| routes.iter().collect())
        .unwrap_or_default()
}

fn id_of(object: &Value) -> Option<&str> {
    object["@id"].as_str()
}

fn is_ours(object: &Value, prefix: &str) -> bool {
    id_of(object).is_some_and(|id| id.starts_with(prefix))
}

/// `env`'s domains as routed in `config`, in this layout or in the one-route-per-domain layout before it.
fn routed_domains(config: &Value, env: &Environment) -> BTreeMap<String, Routed> {
    let prefix = route_prefix(env);
    let mut routed = BTreeMap::new();
    for route in [HTTPS_SERVER, HTTP_SERVER].iter().flat_map(|server| routes_of(config, server)) {
        if !is_ours(route, &prefix) {
            continue;
        }
        for handler in route["handle"].as_array().into_iter().flatten() {
            if handler["handler"] == "map" {
                routed.extend(rows_of(handler).map(|row| (row.spec.host.clone(), row)));
            } else if let Some(spec) = handler["railyard_spec"].as_str() {
                // One route per domain: its spec in a `vars` handler, its dials on the `reverse_proxy` after it.
                let Ok(spec) = serde_json::from_str::<DomainSpec>(spec) else { continue };
                let dials = route["handle"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|h| h["upstreams"].as_array().into_iter().flatten())
                    .filter_map(|upstream| upstream["dial"].as_str().map(str::to_owned))
                    .collect();
                routed.insert(spec.host.clone(), Routed { spec, dials });
            }
        }
    }
    routed
}

/// The domains in one environment route's `map` handler, from the rows that carry a spec (aliases carry none).
fn rows_of(map: &Value) -> impl Iterator<Item = Routed> + '_ {
    let destinations: Vec<&str> =
        map["destinations"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let column = |role: &str| destinations.iter().position(|d| plays(d, role));
    let columns = [column(COUNT), column(APP), column(SPEC), column(PRIMARY)];
    let dial_at: Vec<(usize, usize)> =
        (0..).map_while(|i| Some((column(&format!("h{i}"))?, column(&format!("p{i}"))?))).collect();
    // Aliases are the rows whose primary host is another host, in the order written.
    let mut aliases: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(primary_at) = columns[3] {
        for row in map["mappings"].as_array().into_iter().flatten() {
            if let Some(primary) = row["outputs"][primary_at].as_str().filter(|primary| row["input"] != *primary) {
                aliases.entry(primary.to_owned()).or_default().push(row["input"].clone());
            }
        }
    }
    map["mappings"].as_array().into_iter().flatten().filter_map(move |mapping| {
        let [Some(count_at), Some(app_at), Some(spec_at), Some(_)] = columns else { return None };
        let outputs = mapping["outputs"].as_array()?;
        let host = mapping["input"].as_str()?;
        let mut spec = match outputs.get(spec_at)? {
            Value::String(compact) => spec_from_compact(compact)?,
            written => written.as_object()?.clone(),
        };
        spec.insert("host".to_owned(), json!(host));
        spec.insert("app".to_owned(), outputs.get(app_at)?.clone());
        spec.insert("aliases".to_owned(), Value::Array(aliases.get(host).cloned().unwrap_or_default()));
        let spec: DomainSpec = serde_json::from_value(Value::Object(spec)).ok()?;
        let count = outputs.get(count_at)?.as_str()?.parse::<usize>().ok()?;
        let dials = dial_at
            .iter()
            .take(count)
            .filter_map(|(host, port)| {
                let host = outputs.get(*host)?.as_str()?;
                let port = outputs.get(*port)?.as_str()?;
                Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
            })
            .collect();
        Some(Routed { spec, dials })
    })
}

/// What the rows of a domain do not say already (its spec without host, aliases and app), as one short string:
/// `<containerPort> <port> <tls> [<acmeEmail>]`. Caddy decodes every row on every change and renders every output
/// as text when it validates a map; a plain string costs it a fraction of an object.
fn spec_rest(spec: &DomainSpec) -> Value {
    let tls = serde_json::to_value(spec.tls).ok().and_then(|tls| tls.as_str().map(str::to_owned)).unwrap_or_default();
    let mut compact = format!("{} {} {tls}", spec.container_port, spec.port);
    if let Some(email) = &spec.acme_email {
        compact.push(' ');
        compact.push_str(email);
    }
    Value::String(compact)
}

/// [`spec_rest`] read back, as the object the spec deserialises from.
fn spec_from_compact(compact: &str) -> Option<Map<String, Value>> {
    let mut parts = compact.split(' ');
    let container_port: u16 = parts.next()?.parse().ok()?;
    let mut rest = Map::new();
    rest.insert("containerPort".to_owned(), json!(container_port));
    rest.insert("port".to_owned(), json!(parts.next()?));
    rest.insert("tls".to_owned(), json!(parts.next()?));
    if let Some(email) = parts.next() {
        rest.insert("acmeEmail".to_owned(), json!(email));
    }
    Some(rest)
}

fn host_slot(env: &Environment, index: usize) -> String {
    placeholder(env, &format!("h{index}"))
}

fn port_slot(env: &Environment, index: usize) -> String {
    placeholder(env, &format!("p{index}"))
}

/// `host:port` (or `[v6]:port`) split for an `a` upstream source, which takes the name and the port apart.
fn split_dial(dial: &str) -> (String, String) {
    match dial.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.to_owned()),
        None => (dial.to_owned(), "80".to_owned()),
    }
}

/// Domains of `env` found in `config`, read back from the specs stored with their routes.
pub fn observed_domains(config: &Value, env: &Environment) -> BTreeMap<String, ObservedDomain> {
    routed_domains(config, env)
        .into_iter()
        .map(|(host, routed)| {
            (host, ObservedDomain { env: env.name.clone(), last_applied: routed.spec, drift: Vec::new() })
        })
        .collect()
}

/// Upstream dials of `env`'s routes in `config`.
#[cfg(test)]
fn dials_of(config: &Value, env: &Environment) -> BTreeSet<String> {
    dials(&routed_domains(config, env))
}

fn dials(routed: &BTreeMap<String, Routed>) -> BTreeSet<String> {
    routed.values().flat_map(|routed| routed.dials.iter().cloned()).collect()
}

/// A push to Caddy worked out: the config wanted, and the dials of `env`'s routes before and after.
pub(super) struct Change {
    pub wanted: Value,
    pub before: BTreeSet<String>,
    pub after: BTreeSet<String>,
}

/// [`with_domains_in`], reading `env`'s routes in `current` once for the dials as well.
pub(super) fn change(
    current: &Value,
    env: &Environment,
    domains: &[DomainSpec],
    upstreams: &BTreeMap<String, Vec<String>>,
    settings: &CaddySettings,
    scope: Option<&BTreeSet<String>>,
) -> Change {
    let found = routed_domains(current, env);
    let before = dials(&found);
    let routed = merged(found, domains, upstreams, scope);
    let after = dials(&routed);
    Change { wanted: render(current, env, &routed, settings), before, after }
}

/// Requests in flight to `dials` according to Caddy's `GET /reverse_proxy/upstreams`. Newer Caddy versions may
/// list one address more than once (static pool, dynamic hosts); only zero or not matters to the caller.
pub(super) fn in_flight(upstreams: &Value, dials: &[String]) -> u64 {
    upstreams
        .as_array()
        .into_iter()
        .flatten()
        .filter(|upstream| upstream["address"].as_str().is_some_and(|address| dials.iter().any(|d| d == address)))
        .filter_map(|upstream| upstream["num_requests"].as_u64())
        .sum()
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
    change(config, env, domains, upstreams, settings, None).wanted
}

/// [`with_domains`] replacing only the domains whose host is in `scope` (all of `env`'s when `None`): an app moving
/// its own traffic leaves the environment's other domains as they are in Caddy.
#[cfg(test)]
fn with_domains_in(
    config: &Value,
    env: &Environment,
    domains: &[DomainSpec],
    upstreams: &BTreeMap<String, Vec<String>>,
    settings: &CaddySettings,
    scope: Option<&BTreeSet<String>>,
) -> Value {
    change(config, env, domains, upstreams, settings, scope).wanted
}

/// `env`'s domains after a push of `domains` over `scope` onto those `found` in Caddy.
fn merged(
    mut found: BTreeMap<String, Routed>,
    domains: &[DomainSpec],
    upstreams: &BTreeMap<String, Vec<String>>,
    scope: Option<&BTreeSet<String>>,
) -> BTreeMap<String, Routed> {
    match scope {
        Some(hosts) => found.retain(|host, _| !hosts.contains(host)),
        None => found.clear(),
    }
    for spec in domains {
        let dials = upstreams.get(&spec.host).cloned().unwrap_or_default();
        found.insert(spec.host.clone(), Routed { spec: spec.clone(), dials });
    }
    found
}

/// `config` with `env`'s routes and TLS policies written for `routed`; everything else kept as found.
fn render(config: &Value, env: &Environment, routed: &BTreeMap<String, Routed>, settings: &CaddySettings) -> Value {
    let prefix = route_prefix(env);
    let mut config = if config.is_object() { config.clone() } else { json!({}) };
    // The environment's routes come first, in one order whatever was pushed before, so equal inputs give equal
    // configs; other routes keep their order after them.
    let others = |server: &str| -> Vec<Value> {
        routes_of(&config, server)
            .into_iter()
            .filter(|r| !is_ours(r, &prefix) && id_of(r) != Some(CATCH_ALL) && id_of(r) != Some(DRAINING))
            .cloned()
            .collect()
    };
    let (secure, plain): (Vec<&Routed>, Vec<&Routed>) = routed.values().partition(|r| r.spec.tls != TlsMode::Off);
    let mut https_routes: Vec<Value> = environment_route(env, HTTPS_ROUTE, &secure, true).into_iter().collect();
    let mut http_routes: Vec<Value> =
        environment_route(env, HTTP_ROUTE, &plain, false).into_iter().chain(redirect_route(env, &secure)).collect();
    https_routes.extend(others(HTTPS_SERVER));
    http_routes.extend(others(HTTP_SERVER));
    https_routes.push(catch_all());
    http_routes.push(catch_all());
    let plain_hosts = plain_hosts(&http_routes);
    let http = ensure_object(&mut config, &["apps", "http"]);
    http.insert("http_port".to_owned(), json!(port_of(&settings.http, 80)));
    http.insert("https_port".to_owned(), json!(port_of(&settings.https, 443)));
    let servers = ensure_object(&mut config, &["apps", "http", "servers"]);
    servers.insert(
        HTTPS_SERVER.to_owned(),
        json!({ "listen": [settings.https], "routes": https_routes, "automatic_https": { "skip": plain_hosts } }),
    );
    // railyard writes the redirects to HTTPS itself; Caddy's automatic HTTPS would otherwise claim the plain hosts
    // of a server that does not listen on `http_port` (a unix socket, say) for TLS.
    servers.insert(
        HTTP_SERVER.to_owned(),
        json!({ "listen": [settings.http], "routes": http_routes, "automatic_https": { "disable": true } }),
    );
    let specs: Vec<&DomainSpec> = routed.values().map(|r| &r.spec).collect();
    set_policies(&mut config, env, &specs, settings);
    config
}

fn hosts_of(spec: &DomainSpec) -> impl Iterator<Item = &String> {
    std::iter::once(&spec.host).chain(&spec.aliases)
}

/// Plain-HTTP hosts of every environment (the host matchers of the `@http` routes), which Caddy's automatic HTTPS
/// must leave alone.
fn plain_hosts(http_routes: &[Value]) -> Vec<Value> {
    http_routes
        .iter()
        .filter(|route| id_of(route).is_some_and(|id| id.starts_with("railyard:") && id.ends_with(HTTP_ROUTE)))
        .flat_map(|route| route["match"][0]["host"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The route of `env`'s `domains` on one server: host map, one dynamic `reverse_proxy` per replica count in use, and
/// a 503 for a domain whose app has no serving replica. `None` without domains.
///
/// With `host_matcher` (TLS hosts: Caddy's automatic HTTPS finds them through it) the route matches its hosts and
/// ends there. Without it (plain HTTP), every request passes through the route, and one whose host the map does not
/// know goes on to the next route: Caddy then provisions no host matcher of thousands of names on each change.
fn environment_route(env: &Environment, suffix: &str, domains: &[&Routed], host_matcher: bool) -> Option<Value> {
    if domains.is_empty() {
        return None;
    }
    let slots = domains.iter().map(|d| d.dials.len()).max().unwrap_or(0);
    let [count, app, spec_column, primary] = [COUNT, APP, SPEC, PRIMARY].map(|role| placeholder(env, role));
    let mut destinations = vec![json!(count), json!(app), json!(spec_column), json!(primary)];
    for slot in 0..slots {
        destinations.extend([json!(host_slot(env, slot)), json!(port_slot(env, slot))]);
    }
    let mut hosts = Vec::new();
    let mut mappings = Vec::new();
    for routed in domains {
        let mut dials: Vec<Value> = Vec::with_capacity(2 * slots);
        for slot in 0..slots {
            match routed.dials.get(slot).map(|dial| split_dial(dial)) {
                Some((host, port)) => dials.extend([json!(host), json!(port)]),
                None => dials.extend([Value::Null, Value::Null]),
            }
        }
        let spec = spec_rest(&routed.spec);
        for host in hosts_of(&routed.spec) {
            // The spec rides on the primary host's row only; an alias row is the same route without it.
            let spec = if *host == routed.spec.host { spec.clone() } else { Value::Null };
            let mut outputs =
                vec![json!(routed.dials.len().to_string()), json!(routed.spec.app), spec, json!(routed.spec.host)];
            outputs.extend(dials.iter().cloned());
            mappings.push(json!({ "input": host, "outputs": outputs }));
            hosts.push(json!(host));
        }
    }
    // Replicas dialled by name (Caddy in a container) are counted by Caddy under the address the name resolves to
    // when dialled dynamically, which railyard cannot know; those domains get a `reverse_proxy` of their own with
    // the names as written, so that the drain still sees their requests.
    let (by_name, by_address): (Vec<&&Routed>, Vec<&&Routed>) =
        domains.iter().partition(|d| d.dials.iter().any(|dial| split_dial(dial).0.parse::<IpAddr>().is_err()));
    let mut by_count: Vec<Value> = by_name
        .iter()
        .map(|d| json!({ "match": [{ "vars": { &primary: [d.spec.host] } }], "handle": [static_proxy(&d.dials)] }))
        .collect();
    let counts: BTreeSet<usize> = by_address.iter().map(|d| d.dials.len()).filter(|n| *n > 0).collect();
    by_count.extend(
        counts
            .iter()
            .map(|n| json!({ "match": [{ "vars": { &count: [n.to_string()] } }], "handle": [proxy(env, *n)] })),
    );
    let mut no_replica = json!({ "handle": [{ "handler": "static_response", "status_code": 503, "body": format!("no healthy replica of {app}\n") }] });
    let mut route = json!({
        "@id": format!("{}{suffix}", route_prefix(env)),
        "handle": [
            { "handler": "map", "source": "{http.request.host}", "destinations": destinations, "mappings": mappings },
        ],
    });
    if host_matcher {
        // Caddy sorts a long host list for binary search on every load; handed over sorted, that sort is linear.
        hosts.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        route["match"] = json!([{ "host": hosts }]);
        route["terminal"] = json!(true);
    } else {
        // A host the map does not know reads as no replica of no app (the map's defaults): the subroute then does
        // nothing and the request goes on to the next route.
        let mut defaults = vec![json!("0")];
        defaults.resize(route["handle"][0]["destinations"].as_array().map_or(1, Vec::len), json!(""));
        route["handle"][0]["defaults"] = Value::Array(defaults);
        no_replica["match"] = json!([{ "not": [{ "vars": { &app: [""] } }] }]);
    }
    by_count.push(no_replica);
    if let Some(handlers) = route["handle"].as_array_mut() {
        handlers.push(json!({ "handler": "subroute", "routes": by_count }));
    }
    Some(route)
}

/// A `reverse_proxy` over the first `count` replicas the host map names.
fn proxy(env: &Environment, count: usize) -> Value {
    let sources: Vec<Value> = (0..count)
        .map(|slot| json!({ "source": "a", "name": host_slot(env, slot), "port": port_slot(env, slot) }))
        .collect();
    with_retries(json!({ "handler": "reverse_proxy", "dynamic_upstreams": { "source": "multi", "sources": sources } }))
}

/// A `reverse_proxy` over `dials` as written.
fn static_proxy(dials: &[String]) -> Value {
    let upstreams: Vec<Value> = dials.iter().map(|dial| json!({ "dial": dial })).collect();
    with_retries(json!({ "handler": "reverse_proxy", "upstreams": upstreams }))
}

fn with_retries(mut proxy: Value) -> Value {
    proxy["load_balancing"] = json!({
        // A request that meets a replica just as it stops is tried again on another one; requests that may have
        // changed something are retried only when no connection was made.
        "selection_policy": { "policy": "round_robin" },
        "try_duration": "5s",
        "try_interval": "50ms",
        "retry_match": [{ "method": ["GET", "HEAD", "OPTIONS"] }],
    });
    proxy
}

/// Plain HTTP to `env`'s TLS hosts redirects to HTTPS.
fn redirect_route(env: &Environment, secure: &[&Routed]) -> Option<Value> {
    let hosts: Vec<&String> = secure.iter().flat_map(|routed| hosts_of(&routed.spec)).collect();
    (!hosts.is_empty()).then(|| {
        json!({
            "@id": format!("{}{REDIRECT_ROUTE}", route_prefix(env)),
            "match": [{ "host": hosts }],
            "handle": [{ "handler": "static_response", "status_code": 308, "headers": { "Location": ["https://{http.request.host}{http.request.uri}"] } }],
            "terminal": true,
        })
    })
}

/// Keeps `dials` known to Caddy after they left every route: a route that no request reaches (it follows the
/// terminal catch-all) still references them. Caddy forgets an address's count of requests in flight once no
/// handler of the running config lists it, which would end the drain of a replica dialled by name early; an
/// address dialled dynamically shares the same count while it is listed here.
pub(super) fn set_draining(config: &mut Value, dials: &BTreeSet<String>) {
    let Some(routes) = config["apps"]["http"]["servers"][HTTPS_SERVER]["routes"].as_array_mut() else { return };
    routes.retain(|route| id_of(route) != Some(DRAINING));
    if !dials.is_empty() {
        routes.push(json!({
            "@id": DRAINING,
            "handle": [{ "handler": "reverse_proxy", "upstreams": dials.iter().map(|dial| json!({ "dial": dial })).collect::<Vec<_>>() }],
        }));
    }
}

fn catch_all() -> Value {
    json!({ "@id": CATCH_ALL, "handle": [{ "handler": "static_response", "status_code": 404, "body": "no app here\n" }], "terminal": true })
}

/// TLS automation: `internal` hosts get Caddy's local CA, `auto` hosts ACME with the Project's email.
fn set_policies(config: &mut Value, env: &Environment, domains: &[&DomainSpec], settings: &CaddySettings) {
    let prefix = route_prefix(env);
    let automation = ensure_object(config, &["apps", "tls", "automation"]);
    let others: Vec<Value> = automation
        .get("policies")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter(|p| !is_ours(p, &prefix)).cloned().collect())
        .unwrap_or_default();
    let mut ours = Vec::new();
    for spec in domains.iter().filter(|spec| spec.tls != TlsMode::Off) {
        let subjects: Vec<&String> = hosts_of(spec).collect();
        let issuer = match spec.tls {
            TlsMode::Internal => json!({ "module": "internal" }),
            _ => match spec.acme_email.as_ref().or(settings.acme_email.as_ref()) {
                Some(email) => json!({ "module": "acme", "email": email }),
                None => json!({ "module": "acme" }),
            },
        };
        ours.push(json!({ "@id": format!("{prefix}{}:tls", spec.host), "subjects": subjects, "issuers": [issuer] }));
    }
    ours.sort_by(|a, b| id_of(b).cmp(&id_of(a)));
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
    use crate::proxy::UpstreamMode;

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
        // Plain hosts are in no host matcher, so Caddy's automatic HTTPS never sees them; TLS hosts are.
        let plain = &routes_of(&config, HTTP_SERVER)[0];
        assert_eq!((id_of(plain), &plain["match"]), (Some("railyard:shop:@http"), &Value::Null));
        assert_eq!(
            routes_of(&config, HTTPS_SERVER)[0]["match"][0]["host"],
            json!(["shop.example.com", "www.shop.example.com"])
        );
        assert_eq!(config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"], "internal");
        // The same input gives the same config: nothing is pushed twice.
        assert_eq!(with_domains(&config, &env, &domains, &upstreams, &settings()), config);
    }

    #[test]
    fn maps_written_by_the_layout_before_read_back_the_same() {
        let env = Environment::production("shop");
        let mut spec = domain("shop.example.com", TlsMode::Auto);
        spec.acme_email = Some("certs@shop.example".into());
        let upstreams = BTreeMap::from([("shop.example.com".to_owned(), vec!["127.0.0.1:32768".to_owned()])]);
        let mut config = with_domains(&Value::Null, &env, std::slice::from_ref(&spec), &upstreams, &settings());
        assert_eq!(observed_domains(&config, &env)["shop.example.com"].last_applied, spec, "the compact spec");
        // Before: shared placeholder names, and the spec as an object.
        let map = &mut config["apps"]["http"]["servers"][HTTPS_SERVER]["routes"][0]["handle"][0];
        map["destinations"] = json!([
            "{railyard.n}",
            "{railyard.app}",
            "{railyard.domain}",
            "{railyard.host}",
            "{railyard.h0}",
            "{railyard.p0}"
        ]);
        map["mappings"][0]["outputs"][2] =
            json!({ "containerPort": 8080, "port": "http", "tls": "auto", "acmeEmail": "certs@shop.example" });
        assert_eq!(observed_domains(&config, &env)["shop.example.com"].last_applied, spec);
        assert_eq!(dials_of(&config, &env), upstreams.values().flatten().cloned().collect());
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
        let order: Vec<&str> = routes.iter().map(|r| id_of(r).unwrap_or("by hand")).collect();
        assert_eq!(order, ["railyard:shop:@http", "by hand", "railyard:blog:@http", CATCH_ALL]);
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

    #[test]
    fn one_route_per_environment_and_server_whatever_the_number_of_domains() {
        let env = Environment::production("shop");
        let mut domains: Vec<DomainSpec> =
            (0..50).map(|i| domain(&format!("app-{i}.example.com"), TlsMode::Off)).collect();
        domains.push(domain("secure.example.com", TlsMode::Internal));
        let upstreams: BTreeMap<String, Vec<String>> = domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (d.host.clone(), (0..1 + i % 3).map(|r| format!("127.0.0.1:{}", 20000 + 10 * i + r)).collect())
            })
            .collect();
        let config = with_domains(&Value::Null, &env, &domains, &upstreams, &settings());
        let http: Vec<&str> = routes_of(&config, HTTP_SERVER).iter().filter_map(|r| id_of(r)).collect();
        assert_eq!(http, ["railyard:shop:@http", "railyard:shop:@redirect", CATCH_ALL]);
        let https: Vec<&str> = routes_of(&config, HTTPS_SERVER).iter().filter_map(|r| id_of(r)).collect();
        assert_eq!(https, ["railyard:shop:@https", CATCH_ALL]);
        // One dynamic reverse_proxy per replica count in use (1, 2 and 3), then the 503 for no replica.
        let plain = &routes_of(&config, HTTP_SERVER)[0];
        let by_count = plain["handle"][1]["routes"].as_array().expect("subroute");
        assert_eq!(by_count.len(), 4);
        assert_eq!(by_count[2]["match"][0]["vars"]["{railyard.shop.n}"], json!(["3"]));
        assert_eq!(
            by_count[2]["handle"][0]["dynamic_upstreams"]["sources"][2],
            json!({ "source": "a", "name": "{railyard.shop.h2}", "port": "{railyard.shop.p2}" })
        );
        // The 503 answers only hosts this environment's map knows; others go on to the next route.
        assert_eq!(by_count[3]["handle"][0]["status_code"], 503);
        assert_eq!(by_count[3]["match"], json!([{ "not": [{ "vars": { "{railyard.shop.app}": [""] } }] }]));
        assert_eq!(plain["terminal"], Value::Null);
        // Every host and alias is mapped, each domain's spec in one short string.
        assert_eq!(plain["handle"][0]["mappings"].as_array().map(Vec::len), Some(100));
        assert_eq!(plain["handle"][0]["mappings"][0]["outputs"][2], json!("8080 http off"));
        let all: BTreeSet<String> = upstreams.values().flatten().cloned().collect();
        assert_eq!(dials_of(&config, &env), all);
        assert_eq!(observed_domains(&config, &env).len(), 51);
    }

    #[test]
    fn replicas_dialled_by_name_keep_a_proxy_that_counts_them_by_name() {
        let env = Environment::production("shop");
        let domains = [domain("web.example.com", TlsMode::Off), domain("v6.example.com", TlsMode::Off)];
        let upstreams = BTreeMap::from([
            ("web.example.com".to_owned(), vec!["shop-web-1:8080".to_owned(), "shop-web-2:8080".to_owned()]),
            ("v6.example.com".to_owned(), vec!["[::1]:8080".to_owned()]),
        ]);
        let config = with_domains(&Value::Null, &env, &domains, &upstreams, &settings());
        let by_count = routes_of(&config, HTTP_SERVER)[0]["handle"][1]["routes"].clone();
        assert_eq!(by_count[0]["match"][0]["vars"]["{railyard.shop.host}"], json!(["web.example.com"]));
        assert_eq!(
            by_count[0]["handle"][0]["upstreams"],
            json!([{ "dial": "shop-web-1:8080" }, { "dial": "shop-web-2:8080" }])
        );
        assert_eq!(by_count[1]["match"][0]["vars"]["{railyard.shop.n}"], json!(["1"]));
        let v6 = routes_of(&config, HTTP_SERVER)[0]["handle"][0]["mappings"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["input"] == "v6.example.com").cloned())
            .expect("a row");
        assert_eq!((&v6["outputs"][4], &v6["outputs"][5]), (&json!("::1"), &json!("8080")));
        assert_eq!(dials_of(&config, &env), upstreams.values().flatten().cloned().collect());
    }

    #[test]
    fn routes_of_the_one_route_per_domain_layout_are_taken_over() {
        let env = Environment::production("shop");
        let spec = domain("web.example.com", TlsMode::Off);
        let legacy = json!({ "apps": { "http": { "servers": { HTTP_SERVER: { "routes": [
            { "@id": "railyard:shop:web.example.com", "match": [{ "host": ["web.example.com"] }],
              "handle": [{ "handler": "vars", "railyard_spec": serde_json::to_string(&spec).expect("json") },
                         { "handler": "reverse_proxy", "upstreams": [{ "dial": "127.0.0.1:1001" }] }], "terminal": true },
            { "@id": "railyard:blog:blog.example.com", "handle": [] },
            { "@id": CATCH_ALL },
        ] } } } } });
        assert_eq!(observed_domains(&legacy, &env)["web.example.com"].last_applied, spec);
        assert_eq!(dials_of(&legacy, &env), BTreeSet::from(["127.0.0.1:1001".to_owned()]));
        // An app's switch rewrites the environment in the new layout and leaves the other project's route alone.
        let api = domain("api.example.com", TlsMode::Off);
        let hosts = BTreeSet::from([api.host.clone()]);
        let switched = with_domains_in(&legacy, &env, &[api], &BTreeMap::new(), &settings(), Some(&hosts));
        let ids: Vec<&str> = routes_of(&switched, HTTP_SERVER).iter().filter_map(|r| id_of(r)).collect();
        assert_eq!(ids, ["railyard:shop:@http", "railyard:blog:blog.example.com", CATCH_ALL]);
        assert_eq!(observed_domains(&switched, &env).len(), 2);
        assert_eq!(dials_of(&switched, &env), BTreeSet::from(["127.0.0.1:1001".to_owned()]));
    }
}
