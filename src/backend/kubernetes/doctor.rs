//! `railyard doctor --backend kubernetes`: a cluster checked before its first use. It answers, its version; the
//! verbs railyard needs on every kind it writes are granted (SelfSubjectAccessReview, as `kubectl auth can-i`); an
//! IngressClass exists for Domains; cert-manager and a ClusterIssuer exist for `tls: auto`; metrics-server serves
//! the CPU figures autoscalers and app pages need. Each finding says what to fix.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

use super::KubernetesBackendSettings;
use super::cluster::Kind;

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    /// Railyard runs, but something users may rely on is missing.
    Warn {
        found: String,
        fix: String,
    },
    /// Railyard cannot run its environments here until this is fixed.
    Fail {
        found: String,
        fix: String,
    },
}

/// One check: what was checked and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub finding: Finding,
}

impl Check {
    pub fn failed(&self) -> bool {
        matches!(self.finding, Finding::Fail { .. })
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.finding {
            Finding::Ok(found) => write!(f, "ok    {}: {found}", self.name),
            Finding::Warn { found, fix } => write!(f, "warn  {}: {found}\n      fix: {fix}", self.name),
            Finding::Fail { found, fix } => write!(f, "FAIL  {}: {found}\n      fix: {fix}", self.name),
        }
    }
}

/// The verbs railyard uses on each kind it writes (docker/kubernetes.yaml grants them).
const VERBS: [&str; 5] = ["get", "list", "create", "patch", "delete"];
/// What railyard only reads, beyond the kinds it writes: a Job's pods, and their logs (a run's output). As
/// (resource, subresource, verb), all in the core group.
const READS: [(&str, Option<&str>, &str); 2] = [("pods", None, "list"), ("pods", Some("log"), "get")];
/// What railyard writes beside its objects: an Event per object each sync wrote (group, resource, verb).
const EVENTS: (&str, &str, &str) = ("events.k8s.io", "events", "create");

/// Every check against the cluster `settings` name; stops after the first when the cluster does not answer.
pub async fn checkup(settings: &KubernetesBackendSettings) -> Vec<Check> {
    let client = match connect(settings).await {
        Ok(client) => client,
        Err(finding) => return vec![Check { name: "reachable", finding }],
    };
    let version = match client.apiserver_version().await {
        Ok(info) => Finding::Ok(format!("Kubernetes {}", info.git_version)),
        Err(error) => {
            let fix = "check the kubeconfig's server address and that the API server runs".to_owned();
            return vec![Check { name: "reachable", finding: Finding::Fail { found: error.to_string(), fix } }];
        }
    };
    let groups: Vec<String> = match client.list_api_groups().await {
        Ok(list) => list.groups.into_iter().map(|group| group.name).collect(),
        Err(_) => Vec::new(),
    };
    vec![
        Check { name: "reachable", finding: version },
        Check { name: "permissions", finding: permissions(&client).await },
        Check { name: "ingress class", finding: ingress_classes(&client).await },
        Check { name: "certificates", finding: issuers(&client, &groups).await },
        Check { name: "metrics", finding: metrics(&groups) },
    ]
}

async fn connect(settings: &KubernetesBackendSettings) -> Result<kube::Client, Finding> {
    let config = super::client_config(settings.kubeconfig.as_deref(), settings.context.as_deref()).await;
    let fail = |found: String| Finding::Fail {
        found,
        fix: "point KUBECONFIG (or --kubeconfig and --context) at the cluster railyard should use".to_owned(),
    };
    let config = config.map_err(|error| fail(error.to_string()))?;
    kube::Client::try_from(config).map_err(|error| fail(error.to_string()))
}

/// Each verb on each kind, asked as the user railyard runs as.
async fn permissions(client: &kube::Client) -> Finding {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    let writes = Kind::ALL.into_iter().flat_map(|kind| {
        let resource = kind.resource();
        VERBS.into_iter().map(move |verb| (resource.group.clone(), resource.plural.clone(), None, verb))
    });
    let reads = READS.into_iter().map(|(plural, sub, verb)| (String::new(), plural.to_owned(), sub, verb));
    let (events_group, events, create) = EVENTS;
    let events = std::iter::once((events_group.to_owned(), events.to_owned(), None, create));
    for (group, plural, subresource, verb) in writes.chain(reads).chain(events) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.clone()),
                    resource: Some(plural.clone()),
                    subresource: subresource.map(str::to_owned),
                    verb: Some(verb.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|status| status.allowed) => {}
            Ok(_) => {
                let plural = match subresource {
                    Some(subresource) => format!("{plural}/{subresource}"),
                    None => plural,
                };
                let qualified = if group.is_empty() { plural } else { format!("{plural}.{group}") };
                denied.push(format!("{verb} {qualified}"));
            }
            Err(error) => {
                return Finding::Warn {
                    found: format!("cannot ask the API server what is granted ({})", short(&error)),
                    fix: "check by hand with `kubectl auth can-i --list`: railyard needs docker/kubernetes.yaml's \
                          ClusterRole"
                        .to_owned(),
                };
            }
        }
    }
    if denied.is_empty() {
        let kinds = Kind::ALL.len();
        Finding::Ok(format!(
            "{} verbs on {kinds} kinds granted, reading pods and their logs, and writing Events",
            VERBS.len() * kinds
        ))
    } else {
        Finding::Fail {
            found: format!("not granted: {}", denied.join(", ")),
            fix: "bind railyard's service account or user to the ClusterRole of docker/kubernetes.yaml".to_owned(),
        }
    }
}

/// The API server's answer in a line: its code and message.
fn short(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => other.to_string(),
    }
}

async fn ingress_classes(client: &kube::Client) -> Finding {
    let classes: Api<IngressClass> = Api::all(client.clone());
    match classes.list(&ListParams::default()).await {
        Ok(list) if !list.items.is_empty() => {
            let names: Vec<String> = list.items.iter().filter_map(|class| class.metadata.name.clone()).collect();
            Finding::Ok(names.join(", "))
        }
        Ok(_) => Finding::Warn {
            found: "no IngressClass: Domains get Ingresses that no controller serves".to_owned(),
            fix: "install an ingress controller (ingress-nginx, Traefik...) and name its class in the Project's \
                  `proxy.ingressClassName` if it is not the default"
                .to_owned(),
        },
        Err(error) => Finding::Warn {
            found: format!("cannot list IngressClasses ({})", short(&error)),
            fix: "grant `list` on ingressclasses.networking.k8s.io, or check them with `kubectl get ingressclass`"
                .to_owned(),
        },
    }
}

async fn issuers(client: &kube::Client, groups: &[String]) -> Finding {
    if !groups.iter().any(|group| group == "cert-manager.io") {
        return Finding::Warn {
            found: "cert-manager is not installed: Domains with `tls: auto` get no certificate".to_owned(),
            fix: "install cert-manager and a ClusterIssuer (Let's Encrypt), and name it in the Project's \
                  `proxy.clusterIssuer`"
                .to_owned(),
        };
    }
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", "ClusterIssuer"));
    let issuers: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    match issuers.list(&ListParams::default()).await {
        Ok(list) if !list.items.is_empty() => Finding::Ok(
            list.items.iter().filter_map(|issuer| issuer.metadata.name.clone()).collect::<Vec<_>>().join(", "),
        ),
        Ok(_) => Finding::Warn {
            found: "cert-manager runs but has no ClusterIssuer".to_owned(),
            fix: "create a ClusterIssuer (ACME with your e-mail) and name it in the Project's `proxy.clusterIssuer`"
                .to_owned(),
        },
        Err(error) => Finding::Warn {
            found: format!("cannot list ClusterIssuers ({})", short(&error)),
            fix: "check them with `kubectl get clusterissuer`".to_owned(),
        },
    }
}

fn metrics(groups: &[String]) -> Finding {
    if groups.iter().any(|group| group == "metrics.k8s.io") {
        Finding::Ok("metrics.k8s.io is served".to_owned())
    } else {
        Finding::Warn {
            found: "metrics-server is not installed: HorizontalPodAutoscalers cannot scale by CPU, and app pages \
                    show no CPU"
                .to_owned(),
            fix: "install metrics-server".to_owned(),
        }
    }
}
