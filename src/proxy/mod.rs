//! Domains on the Docker backend through Caddy's admin API. railyard owns two named servers (`railyard` for HTTPS
//! and `railyard-http` for plain HTTP and redirects), one route per environment on each (see [`layout`] for why
//! not one per domain) and its TLS automation policies; everything else in Caddy's config is kept as found. Config
//! is pushed only when it changed.
//!
//! Every read-modify-write of Caddy's config holds one lock, so apps switching traffic in parallel never lose each
//! other's routes. Replicas taken out of the routes stay referenced by a route no request reaches
//! (`railyard:draining`, after the catch-all) until railyard has waited for Caddy's count of requests in flight to
//! them to reach zero.
//!
//! Every config change makes Caddy (2.6 and later, on Linux) open new listening sockets with `SO_REUSEPORT` and close
//! the old ones; connections the kernel queued on an old socket that Caddy had not accepted yet are reset, unless
//! `net.ipv4.tcp_migrate_req=1` in Caddy's network namespace moves them to the new socket (see README). railyard
//! pushes only changed configs, so that reset window opens once per route change.

mod admin;
mod layout;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use self::admin::AdminEndpoint;
pub use self::admin::AdminError;
use self::layout::{Change, in_flight, set_draining};
pub use self::layout::{HTTP_SERVER, HTTPS_SERVER, observed_domains, with_domains};

use crate::model::{DomainSpec, Environment, ObservedDomain};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Loading a config makes Caddy provision all of it, which takes longer than a read.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before reading back the config of a push whose answer was lost.
const LOST_ANSWER_PAUSE: Duration = Duration::from_millis(100);
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
    #[error("cannot reach Caddy's admin API at {admin}: {source}; start Caddy or point --caddy-admin at it")]
    Unreachable {
        admin: String,
        #[source]
        source: AdminError,
    },
    #[error(
        "Caddy's admin API at {admin} answered GET {path} with what is not JSON ({source}); point --caddy-admin at \
         Caddy's admin API"
    )]
    NotJson {
        admin: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write Caddy's config as JSON: {0}; this is a bug in railyard, please report it")]
    Serialise(#[source] serde_json::Error),
    #[error("Caddy refused the config ({status}): {body}")]
    Refused { status: u16, body: String },
}

impl ProxyError {
    /// Nothing listens at the admin address: Caddy is not running, so it routes nothing now (a Caddy started again
    /// without `--resume` starts from its own config file, without railyard's routes).
    pub fn is_not_running(&self) -> bool {
        match self {
            ProxyError::Unreachable { source: AdminError::Connect { source, .. }, .. } => {
                matches!(source.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound)
            }
            _ => false,
        }
    }
}

/// A Caddy reached through its admin API. Clones share one lock, so that route changes of apps applied in parallel
/// are read-modify-writes one after another and never lose each other's routes.
#[derive(Debug, Clone)]
pub struct Caddy {
    settings: CaddySettings,
    endpoint: AdminEndpoint,
    /// Held across each read-modify-write of Caddy's config; guards the dials still draining and the config last
    /// pushed.
    draining: Arc<Mutex<Pushed>>,
}

/// What railyard knows of Caddy's config between pushes.
#[derive(Debug, Default)]
struct Pushed {
    /// Dials that left every route and are still counted until they drained.
    dials: BTreeSet<String>,
    /// The config railyard pushed last and the ETag Caddy gives it: the next push starts from it instead of reading
    /// Caddy's config again, and sends the ETag as `If-Match`, so that a change made by anyone else meanwhile makes
    /// Caddy refuse (412) and railyard read and merge afresh.
    last: Option<(Value, String)>,
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

    fn unreachable(&self, source: AdminError) -> ProxyError {
        ProxyError::Unreachable { admin: self.settings.admin.clone(), source }
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
        serde_json::from_slice(&response.body).map_err(|source| ProxyError::NotJson {
            admin: self.settings.admin.clone(),
            path: path.to_owned(),
            source,
        })
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
        let mut pushed = self.draining.lock().await;
        // Taken: after a failure the next push reads Caddy's config again.
        let mut last = pushed.last.take();
        // A push whose answer was lost (Caddy swaps its listeners on a reload, which can drop the admin connection)
        // may have been applied: it is read back once, and what that push did is kept for the answer.
        let mut answer_lost: Option<(BTreeSet<String>, Vec<String>)> = None;
        loop {
            let guarded = last.is_some();
            let (mut current, etag) = match last.take() {
                Some((config, etag)) => (config, Some(etag)),
                None => (self.config().await?, None),
            };
            let Change { mut wanted, before, after } =
                layout::change(&current, env, domains, upstreams, &self.settings, scope);
            let retired: Vec<String> = before.difference(&after).cloned().collect();
            // Every config change costs a reload of everything (and, on TCP listeners, a socket swap that can reset
            // connections: see the module's doc), so dials that finished draining are forgotten with the next change
            // rather than by a change of their own.
            set_draining(&mut current, &BTreeSet::new());
            if retired.is_empty() && wanted == current {
                // Still a good base for the next push: the draining route is written anew on every push.
                pushed.last = etag.map(|etag| (current, etag));
                if let Some((dials, retired)) = answer_lost {
                    pushed.dials = dials;
                    return Ok(Switch { pushed: true, retired });
                }
                return Ok(Switch { pushed: false, retired });
            }
            let mut keep_counting = pushed.dials.clone();
            keep_counting.extend(retired.iter().cloned());
            set_draining(&mut wanted, &keep_counting);
            let body = serde_json::to_vec(&wanted).map_err(ProxyError::Serialise)?;
            let next_etag = caddy_etag(&body);
            let sent = match &etag {
                Some(etag) => self.endpoint.request_if_match("POST", "/config/", Some(body), Some(etag), LOAD_TIMEOUT),
                None => self.endpoint.request_if_match("POST", "/load", Some(body), None, LOAD_TIMEOUT),
            }
            .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) if answer_lost.is_none() => {
                    tracing::debug!(%error, "Caddy's answer to a push was lost; reading its config back");
                    answer_lost = Some((keep_counting, retired));
                    tokio::time::sleep(LOST_ANSWER_PAUSE).await;
                    continue;
                }
                Err(error) => return Err(self.unreachable(error)),
            };
            if guarded && response.status == 412 {
                // Changed by someone else since railyard's last push: read it and merge into that.
                continue;
            }
            if !(200..300).contains(&response.status) {
                return Err(ProxyError::Refused {
                    status: response.status,
                    body: String::from_utf8_lossy(&response.body).into_owned(),
                });
            }
            pushed.dials = keep_counting;
            pushed.last = Some((wanted, next_etag));
            return Ok(Switch { pushed: true, retired });
        }
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
        let draining = &mut self.draining.lock().await.dials;
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

/// The ETag Caddy gives `config` (as `GET /config/` answers it): FNV-1a (32 bits) of the config as Go's encoder
/// writes it, newline included. Written the way serde writes it, with Go's HTML escapes added; any difference left
/// (a config holding characters the two encoders escape differently) only costs a 412 and a fresh read.
fn caddy_etag(serialised: &[u8]) -> String {
    let text = String::from_utf8_lossy(serialised)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let hash = text
        .bytes()
        .chain(std::iter::once(b'\n'))
        .fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    format!("\"/config/ {hash:08x}\"")
}

#[cfg(test)]
mod etag_tests {
    use super::caddy_etag;

    #[test]
    fn the_etag_is_caddys_for_the_same_config() {
        // As Caddy 2.6 answered `GET /config/` for this config: `Etag: "/config/ b05ccf86"`.
        assert_eq!(caddy_etag(br#"{"admin":{"listen":"127.0.0.1:23119"}}"#), "\"/config/ b05ccf86\"");
    }
}
