//! The long-lived environments a Project lists, and how hosts are shared out among them: a host that two
//! environments would route belongs to the one listed first. Pure: the daemon feeds in each environment's desired
//! state and applies what comes out.

pub use super::desired::ListedEnvironment;
use std::collections::BTreeMap;

use serde::Serialize;

use super::Config;
use super::desired::{DesiredState, Environment};

impl Config {
    /// The environments to run, in the order the Project lists them. Without `environments` that is production on
    /// `tracked_branch`. An entry without `branch` follows `tracked_branch` when it is production and a branch of
    /// its own name otherwise.
    pub fn environments(&self, tracked_branch: &str) -> Vec<ListedEnvironment> {
        let Some(listed) = &self.project.doc.environments else {
            return vec![ListedEnvironment {
                name: Environment::PRODUCTION.to_owned(),
                branch: tracked_branch.to_owned(),
                host_template: None,
            }];
        };
        listed
            .value
            .iter()
            .map(|declared| {
                let name = declared.name.value.clone();
                let default_branch = if name == Environment::PRODUCTION { tracked_branch } else { name.as_str() };
                ListedEnvironment {
                    branch: declared.branch.as_ref().map_or(default_branch, |branch| &branch.value).to_owned(),
                    host_template: declared.host_template.as_ref().map(|template| template.value.clone()),
                    name,
                }
            })
            .collect()
    }

    /// This config (read from an environment's branch) under the policy of `tracked` (read from the tracked
    /// branch): the Project's name, `environments`, `previews`, `sync` and `proxy` are taken from `tracked`, so that
    /// a commit on another branch can neither add environments, nor loosen the rules it is judged by, nor pick the
    /// ingress class, issuers or ACME contact production's certificates come from. Apps, Domains, ScalingRules and
    /// the Project's `defaults` stay this branch's.
    pub fn under_policy_of(mut self, tracked: &Config) -> Config {
        let (own, policy) = (&mut self.project.doc, &tracked.project.doc);
        own.name = policy.name.clone();
        own.environments = policy.environments.clone();
        own.previews = policy.previews.clone();
        own.sync = policy.sync.clone();
        own.proxy = policy.proxy.clone();
        self
    }
}

/// Which environment each host belongs to: the first in `envs` that routes it. `envs` holds, in the Project's
/// order, each environment's name and its hosts including aliases (see [`DesiredState::hosts`]).
pub fn host_claims(envs: &[(String, Vec<String>)]) -> BTreeMap<String, String> {
    let mut claims = BTreeMap::new();
    for (env, hosts) in envs {
        for host in hosts {
            claims.entry(host.clone()).or_insert_with(|| env.clone());
        }
    }
    claims
}

/// A host this environment would route but that an environment listed earlier claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostConflict {
    pub host: String,
    /// The environment that routes the host.
    pub claimed_by: String,
}

impl DesiredState {
    /// Every host this state routes, aliases included, in domain order.
    pub fn hosts(&self) -> Vec<String> {
        self.domains.values().flat_map(|domain| std::iter::once(&domain.host).chain(&domain.aliases)).cloned().collect()
    }

    /// Leaves out every domain whose host another environment claims, and every alias another environment claims;
    /// each such host gets a warning and is returned as a conflict. Hosts nobody claims stay.
    pub fn drop_hosts_claimed_elsewhere(&mut self, claims: &BTreeMap<String, String>) -> Vec<HostConflict> {
        let own = self.env.name.clone();
        let claimed_elsewhere = |host: &str| claims.get(host).filter(|env| **env != own).cloned();
        let mut conflicts = Vec::new();
        self.domains.retain(|host, domain| {
            if let Some(claimed_by) = claimed_elsewhere(host) {
                conflicts.push(HostConflict { host: host.clone(), claimed_by });
                return false;
            }
            domain.aliases.retain(|alias| match claimed_elsewhere(alias) {
                Some(claimed_by) => {
                    conflicts.push(HostConflict { host: alias.clone(), claimed_by });
                    false
                }
                None => true,
            });
            true
        });
        self.warnings.extend(conflicts.iter().map(|conflict| {
            format!(
                "host {} is also claimed by environment `{}`, listed first; it is not routed here",
                conflict.host, conflict.claimed_by
            )
        }));
        conflicts
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{RepoFile, load};

    const APPS: &str = "kind: App\nname: web\nimage: busybox\nports: [{ name: http, port: 8080 }]\n---\n\
                        kind: App\nname: api\nimage: busybox\nports: [{ name: http, port: 9090 }]\n";
    const DOMAINS: &str = "kind: Domain\nhost: shop.example.com\naliases: [www.shop.example.com]\napp: web\nport: http\n\
                           ---\nkind: Domain\nhost: api.shop.example.com\napp: api\nport: http\n";

    fn config(environments: &str) -> Config {
        let project = format!("kind: Project\nname: shop\n{environments}");
        let files = [
            RepoFile::text("railyard.yaml", &project),
            RepoFile::text("apps.yaml", APPS),
            RepoFile::text("domains.yaml", DOMAINS),
        ];
        load(&files).unwrap_or_else(|invalid| panic!("valid:\n{invalid}"))
    }

    fn listed(name: &str, branch: &str, host_template: Option<&str>) -> ListedEnvironment {
        ListedEnvironment {
            name: name.to_owned(),
            branch: branch.to_owned(),
            host_template: host_template.map(Into::into),
        }
    }

    /// The desired state of the listed environment `name`, as the daemon would compute it.
    fn desired_of(config: &Config, name: &str) -> DesiredState {
        let listed = config.environments("main").into_iter().find(|listed| listed.name == name).expect("listed");
        config.desired(&Environment::listed(config.project_name(), &listed), Some("abc123"))
    }

    fn routes(desired: &DesiredState) -> Vec<(String, Vec<String>, String)> {
        desired.domains.values().map(|d| (d.host.clone(), d.aliases.clone(), d.app.clone())).collect()
    }

    fn route(host: &str, aliases: &[&str], app: &str) -> (String, Vec<String>, String) {
        (host.to_owned(), aliases.iter().map(|alias| (*alias).to_owned()).collect(), app.to_owned())
    }

    #[test]
    fn without_a_list_there_is_production_on_the_tracked_branch() {
        assert_eq!(config("").environments("trunk"), [listed("production", "trunk", None)]);
    }

    #[test]
    fn listed_environments_keep_their_order_branches_and_templates() {
        let config = config(
            "environments:\n  - { name: staging, branch: stage, hostTemplate: \"{app}.staging.example.com\" }\n  \
             - { name: production, branch: release }\n",
        );
        assert_eq!(
            config.environments("main"),
            [listed("staging", "stage", Some("{app}.staging.example.com")), listed("production", "release", None)]
        );
    }

    #[test]
    fn an_entry_without_branch_follows_the_tracked_branch_for_production_and_its_own_name_otherwise() {
        let config = config("environments:\n  - name: production\n  - name: qa\n");
        assert_eq!(config.environments("main"), [listed("production", "main", None), listed("qa", "qa", None)]);
    }

    #[test]
    fn a_branch_is_judged_by_the_policy_of_the_tracked_branch() {
        let tracked = config("sync: manual\nenvironments:\n  - name: production\n  - name: staging\n");
        let files = [
            RepoFile::text(
                "railyard.yaml",
                "kind: Project\nname: renamed\nsync: auto\ndefaults: { replicas: 3 }\nenvironments:\n  \
                 - name: staging\n  - name: extra\nproxy: { ingressClassName: attacker, clusterIssuer: theirs }\n",
            ),
            RepoFile::text("apps.yaml", "kind: App\nname: web\nimage: busybox:2\n"),
        ];
        let branch = load(&files).unwrap_or_else(|invalid| panic!("valid:\n{invalid}")).under_policy_of(&tracked);
        assert_eq!(branch.project_name(), "shop");
        assert_eq!(branch.environments("main"), tracked.environments("main"));
        let listed = listed("staging", "staging", None);
        let desired = branch.desired(&Environment::listed(branch.project_name(), &listed), None);
        assert_eq!(desired.sync, crate::model::kinds::SyncPolicy::Manual);
        assert_eq!(desired.apps["web"].container.image, "busybox:2", "the apps are the branch's own");
        assert_eq!(desired.apps["web"].replicas, 3, "so are the Project's defaults");
        assert_eq!(desired.platform, tracked.desired(&Environment::production("shop"), None).platform);
        assert!(branch.project.doc.proxy.is_none(), "the proxy settings are the tracked branch's (none)");
    }

    #[test]
    fn listed_environments_are_named_after_the_project() {
        let production = Environment::listed("shop", &listed("production", "main", Some("{app}.example.com")));
        assert_eq!(production, Environment::production("shop"));
        let staging = Environment::listed("shop", &listed("staging", "staging", Some("{app}.staging.example.com")));
        assert_eq!((staging.name.as_str(), staging.project.as_str()), ("staging", "shop-staging"));
        assert_eq!(staging.preview, None);
        assert_eq!(staging.host_template.as_deref(), Some("{app}.staging.example.com"));
        assert_eq!(Environment::named("shop", "staging"), None, "named() knows only production and previews");
    }

    #[test]
    fn environment_without_host_template_serialises_as_before() {
        let json = serde_json::to_value(Environment::production("shop")).expect("serialises");
        assert_eq!(json, serde_json::json!({ "name": "production", "project": "shop", "preview": null }));
        let read: Environment = serde_json::from_value(json).expect("reads back");
        assert_eq!(read, Environment::production("shop"));
    }

    #[test]
    fn production_routes_the_domains_as_written() {
        let config = config("environments:\n  - name: production\n");
        let desired = desired_of(&config, "production");
        assert_eq!(
            routes(&desired),
            [route("api.shop.example.com", &[], "api"), route("shop.example.com", &["www.shop.example.com"], "web")]
        );
        assert!(desired.warnings.is_empty(), "{:?}", desired.warnings);
    }

    #[test]
    fn a_template_with_app_routes_each_domain_and_drops_the_aliases() {
        let config =
            config("environments:\n  - { name: staging, hostTemplate: \"{app}.{env}.{project}.example.com\" }\n");
        let desired = desired_of(&config, "staging");
        assert_eq!(
            routes(&desired),
            [route("api.staging.shop.example.com", &[], "api"), route("web.staging.shop.example.com", &[], "web")]
        );
        assert_eq!(desired.domains["web.staging.shop.example.com"].container_port, 8080);
        assert_eq!(desired.env.project, "shop-staging");
        assert!(desired.warnings.is_empty(), "{:?}", desired.warnings);
    }

    #[test]
    fn a_template_with_host_templates_the_aliases_too() {
        let config = config("environments:\n  - { name: staging, hostTemplate: \"{host}.staging.example.com\" }\n");
        let desired = desired_of(&config, "staging");
        assert_eq!(
            routes(&desired),
            [
                route("api.shop.example.com.staging.example.com", &[], "api"),
                route("shop.example.com.staging.example.com", &["www.shop.example.com.staging.example.com"], "web"),
            ]
        );
    }

    #[test]
    fn without_a_template_no_domain_is_routed_and_one_warning_says_so() {
        let config = config("environments:\n  - name: production\n  - name: staging\n");
        let desired = desired_of(&config, "staging");
        assert!(desired.domains.is_empty(), "{:?}", desired.domains);
        assert_eq!(
            desired.warnings,
            ["environment `staging` has no hostTemplate: its 2 domain(s) are not routed; add hostTemplate to its \
              entry in the Project's environments"]
        );
        assert_eq!(desired.apps.len(), 2, "the apps run all the same");
    }

    #[test]
    fn a_template_that_gives_two_domains_one_host_routes_the_first_and_warns() {
        let config = config("environments:\n  - { name: staging, hostTemplate: \"staging.example.com\" }\n");
        let desired = desired_of(&config, "staging");
        assert_eq!(routes(&desired), [route("staging.example.com", &[], "api")]);
        assert_eq!(desired.warnings.len(), 1, "{:?}", desired.warnings);
        assert!(
            desired.warnings[0]
                .contains("makes `staging.example.com` of both `api.shop.example.com` and `shop.example.com`"),
            "{:?}",
            desired.warnings
        );
    }

    #[test]
    fn a_filled_host_that_is_not_a_host_name_is_left_out_with_a_warning() {
        // 234 characters after `{host}.`: shop.example.com fits in the 253 of a host name, the longer hosts do not.
        let suffix = format!("{a}.{a}.{a}.{}", "a".repeat(51), a = "a".repeat(60));
        let config = config(&format!("environments:\n  - {{ name: staging, hostTemplate: \"{{host}}.{suffix}\" }}\n"));
        let desired = desired_of(&config, "staging");
        assert_eq!(routes(&desired), [route(&format!("shop.example.com.{suffix}"), &[], "web")]);
        assert_eq!(desired.warnings.len(), 2, "{:?}", desired.warnings);
        for (warning, of) in desired.warnings.iter().zip(["api.shop.example.com", "www.shop.example.com"]) {
            assert!(warning.starts_with("environment `staging`: hostTemplate `{host}."), "{warning}");
            assert!(warning.contains(&format!("of `{of}`, which is not a valid host name")), "{warning}");
        }
    }

    #[test]
    fn previews_keep_their_own_template() {
        let config = config(
            "previews: { enabled: true, hostTemplate: \"{app}-pr-{number}.preview.example.com\" }\n\
             environments:\n  - { name: staging, hostTemplate: \"{app}.staging.example.com\" }\n",
        );
        let preview = config.desired(&Environment::pull_request("shop", 7), None);
        assert_eq!(
            routes(&preview),
            [route("api-pr-7.preview.example.com", &[], "api"), route("web-pr-7.preview.example.com", &[], "web")]
        );
        assert!(!preview.warnings.iter().any(|warning| warning.contains("hostTemplate")), "{:?}", preview.warnings);
    }

    fn claims_of(states: &[&DesiredState]) -> BTreeMap<String, String> {
        let envs: Vec<(String, Vec<String>)> =
            states.iter().map(|state| (state.env.name.clone(), state.hosts())).collect();
        host_claims(&envs)
    }

    #[test]
    fn hosts_lists_every_host_and_alias() {
        let desired = desired_of(&config(""), "production");
        assert_eq!(desired.hosts(), ["api.shop.example.com", "shop.example.com", "www.shop.example.com"]);
    }

    #[test]
    fn a_host_claimed_by_an_earlier_environment_is_not_routed_by_a_later_one() {
        let config = config("environments:\n  - name: production\n");
        // Validation refuses the template `{host}`, which collides with production everywhere; it is set by hand.
        let production = desired_of(&config, "production");
        let mirror_env = Environment::listed("shop", &listed("mirror", "mirror", Some("{host}")));
        let mut mirror = config.desired(&mirror_env, None);
        assert_eq!(mirror.hosts(), production.hosts());
        let claims = claims_of(&[&production, &mirror]);
        let mut production_after = production.clone();
        assert!(production_after.drop_hosts_claimed_elsewhere(&claims).is_empty());
        assert_eq!(production_after, production, "the first environment keeps everything");
        let conflicts = mirror.drop_hosts_claimed_elsewhere(&claims);
        assert!(mirror.domains.is_empty(), "{:?}", mirror.domains);
        let conflict = |host: &str| HostConflict { host: host.to_owned(), claimed_by: "production".to_owned() };
        assert_eq!(conflicts, [conflict("api.shop.example.com"), conflict("shop.example.com")]);
        assert_eq!(
            mirror.warnings,
            [
                "host api.shop.example.com is also claimed by environment `production`, listed first; it is not routed here",
                "host shop.example.com is also claimed by environment `production`, listed first; it is not routed here",
            ]
        );
        assert_eq!(
            serde_json::to_value(&conflicts[0]).expect("serialises"),
            serde_json::json!({ "host": "api.shop.example.com", "claimedBy": "production" })
        );
    }

    #[test]
    fn a_claimed_alias_is_dropped_and_its_domain_kept() {
        let config = config("environments:\n  - { name: staging, hostTemplate: \"{host}.staging.example.com\" }\n");
        let mut staging = desired_of(&config, "staging");
        let claims = host_claims(&[
            ("qa".to_owned(), vec!["www.shop.example.com.staging.example.com".to_owned()]),
            ("staging".to_owned(), staging.hosts()),
        ]);
        let conflicts = staging.drop_hosts_claimed_elsewhere(&claims);
        assert_eq!(
            conflicts,
            [HostConflict { host: "www.shop.example.com.staging.example.com".to_owned(), claimed_by: "qa".to_owned() }]
        );
        assert_eq!(
            routes(&staging),
            [
                route("api.shop.example.com.staging.example.com", &[], "api"),
                route("shop.example.com.staging.example.com", &[], "web"),
            ]
        );
        assert_eq!(staging.warnings.len(), 1, "{:?}", staging.warnings);
    }

    #[test]
    fn hosts_nobody_claims_stay() {
        let mut production = desired_of(&config(""), "production");
        let before = production.clone();
        assert!(production.drop_hosts_claimed_elsewhere(&BTreeMap::new()).is_empty());
        assert_eq!(production, before);
    }

    proptest! {
        #[test]
        fn every_host_belongs_to_the_first_environment_listing_it(
            envs in prop::collection::vec(
                ("[a-d]", prop::collection::vec("[a-f]\\.example\\.com", 0..5)),
                0..6,
            ),
        ) {
            let claims = host_claims(&envs);
            let listed: std::collections::BTreeSet<&String> = envs.iter().flat_map(|(_, hosts)| hosts).collect();
            prop_assert_eq!(claims.len(), listed.len());
            for (host, env) in &claims {
                let first = envs.iter().find(|(_, hosts)| hosts.contains(host)).map(|(name, _)| name);
                prop_assert_eq!(Some(env), first);
            }
        }
    }
}
