//! What the pages and API show of an environment's apps: readiness, health, addresses and domain URLs, computed
//! from the desired and observed states.

use super::{AppStatus, Health, PublishedAddress};
use crate::model::{self, Observed};

/// Apps as declared, with what runs of them.
pub(super) fn app_statuses(
    desired: &model::DesiredState,
    observed: &Observed,
    proxy: Option<&crate::proxy::CaddySettings>,
    scaling: &[crate::scaling::AppScaling],
) -> Vec<AppStatus> {
    desired
        .apps
        .values()
        .map(|spec| {
            let replicas = observed.apps.get(&spec.name).map(|app| app.replicas.clone()).unwrap_or_default();
            let hash = spec.spec_hash();
            let ready = replicas.iter().filter(|r| r.is_serving() && r.spec_hash == hash).count() as u32;
            let serving = replicas.iter().filter(|r| r.is_serving()).count();
            let health = if ready >= spec.replicas {
                Health::Healthy
            } else if replicas.is_empty() {
                Health::Missing
            } else if serving > 0 {
                Health::Degraded
            } else {
                Health::Failed
            };
            AppStatus {
                name: spec.name.clone(),
                image: spec.container.image.clone(),
                ready,
                desired: spec.replicas,
                ports: spec.container.ports.iter().map(|port| port.container_port).collect(),
                domains: desired
                    .domains
                    .values()
                    .filter(|d| d.app == spec.name)
                    .map(|d| (d.host.clone(), d.tls))
                    .collect(),
                health,
                commit: replicas.iter().filter_map(|r| r.commit.clone()).next(),
                addresses: replicas
                    .iter()
                    .flat_map(|replica| {
                        replica.published.iter().map(|(container_port, address)| PublishedAddress {
                            replica: replica.number,
                            container_port: *container_port,
                            address: address.clone(),
                        })
                    })
                    .collect(),
                domain_urls: proxy
                    .map(|proxy| {
                        desired
                            .domains
                            .values()
                            .filter(|d| d.app == spec.name)
                            .map(|d| domain_url(&d.host, d.tls, proxy))
                            .collect()
                    })
                    .unwrap_or_default(),
                replicas,
                scaling: scaling.iter().find(|app| app.app == spec.name).cloned(),
            }
        })
        .collect()
}

/// `http://host:8780/` when the proxy listens on 8780, `https://host/` on the default HTTPS port.
fn domain_url(host: &str, tls: crate::model::kinds::TlsMode, proxy: &crate::proxy::CaddySettings) -> String {
    let (scheme, listen, default_port) = if tls == crate::model::kinds::TlsMode::Off {
        ("http", &proxy.http, "80")
    } else {
        ("https", &proxy.https, "443")
    };
    let port = listen.rsplit_once(':').map_or(default_port, |(_, port)| port);
    if port == default_port || port.is_empty() {
        format!("{scheme}://{host}/")
    } else {
        format!("{scheme}://{host}:{port}/")
    }
}

pub(super) fn overall_health(apps: &[AppStatus]) -> Health {
    if apps.iter().any(|app| app.health == Health::Failed) {
        Health::Failed
    } else if !apps.is_empty() && apps.iter().all(|app| app.health == Health::Missing) {
        Health::Missing
    } else if apps.iter().any(|app| matches!(app.health, Health::Degraded | Health::Missing)) {
        Health::Degraded
    } else {
        Health::Healthy
    }
}
