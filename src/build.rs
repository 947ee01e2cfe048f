//! The one step from config to desired state, pure, shared by `railyard plan|apply`, every environment worker, the
//! plan of a branch's head while pinned, the plan of a rollback's commit and a preview's plan against production:
//! (config under the tracked branch's policy, environment, commit, sync override, hosts claimed elsewhere, scaling
//! records, now) → the desired state, the scaling bounds in force and the hosts left to others. The callers bring
//! what needs I/O (the config, the records); nothing here reads a clock, a file or a store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::kinds::SyncPolicy;
use crate::model::{Config, DesiredState, Environment, HostConflict};
use crate::scaling::{self, AppScaling};

/// What the store remembers of scaling for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalingRecords {
    /// Since when (ms since the epoch) each app has had a ScalingRule.
    pub appeared_ms: BTreeMap<String, i64>,
    /// The replica count the CPU autoscaler last decided, per app.
    pub decided: BTreeMap<String, u32>,
    /// Since when a rule without a record counts.
    pub unrecorded: Unrecorded,
}

/// Since when a ScalingRule without a record counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unrecorded {
    /// As a rule followed since long ago: every schedule entry that ever fired counts (the CLI, which has no
    /// memory of when a rule appeared).
    #[default]
    LongAgo,
    /// From now: a new rule is not moved by an entry that fired before it existed (the daemon).
    Now,
}

/// Everything the desired state of one environment is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The environment's config, under the tracked branch's policy ([`Config::under_policy_of`]).
    pub config: &'a Config,
    pub env: &'a Environment,
    pub commit: Option<&'a str>,
    /// `--sync`, overriding the Project's sync policy.
    pub sync: Option<SyncPolicy>,
    /// Host to the environment that routes it; hosts another environment routes are dropped from this one.
    pub claims: &'a BTreeMap<String, String>,
    pub scaling: &'a ScalingRecords,
    pub now: DateTime<Utc>,
}

/// The desired state and what was decided on the way.
#[derive(Debug, Clone)]
pub struct Built {
    pub desired: DesiredState,
    /// The bounds the ScalingRules' schedules put in force, per app.
    pub scaling: Vec<AppScaling>,
    /// Hosts of this config that an environment listed earlier routes.
    pub conflicts: Vec<HostConflict>,
}

/// The desired state of `inputs.env`.
pub fn desired_state(inputs: &Inputs<'_>) -> Built {
    let mut desired = inputs.config.desired(inputs.env, inputs.commit);
    if let Some(sync) = inputs.sync {
        desired.sync = sync;
    }
    let records = inputs.scaling;
    let since = |app: &str| {
        let recorded = records.appeared_ms.get(app).and_then(|ms| DateTime::from_timestamp_millis(*ms));
        recorded.unwrap_or(match records.unrecorded {
            Unrecorded::LongAgo => DateTime::UNIX_EPOCH,
            Unrecorded::Now => inputs.now,
        })
    };
    let scaling = scaling::put_in_force(&mut desired, since, inputs.now);
    for app in desired.apps.values_mut() {
        if let (Some(bounds), Some(decided)) = (scaling::cpu_bounds(app), records.decided.get(&app.name)) {
            app.replicas = (*decided).clamp(bounds.0, bounds.1);
        }
    }
    let conflicts = desired.drop_hosts_claimed_elsewhere(inputs.claims);
    Built { desired, scaling, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, RepoFile};

    const PROJECT: &str = "kind: Project\nname: shop\nsync: { policy: auto }\n";
    const WEB: &str = "kind: App\nname: web\nimage: web:1\nreplicas: 2\nresources: { cpus: \"0.5\" }\nports: [{ name: \
                       http, port: 8080 }]\n---\nkind: Domain\nhost: shop.example.com\napp: web\nport: http\ntls: off\n";
    const RULE: &str = "kind: ScalingRule\napp: web\nmin: 1\nmax: 6\ntargetCpuPercent: 70\nschedules:\n  - { cron: \"0 \
                        0 8 * * *\", min: 4 }\n";

    fn config(files: &[(&str, &str)]) -> Config {
        let files: Vec<RepoFile> = files.iter().map(|(path, text)| RepoFile::text(path, text)).collect();
        model::load(&files).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"))
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    fn build(
        config: &Config,
        records: &ScalingRecords,
        claims: &BTreeMap<String, String>,
        sync: Option<SyncPolicy>,
    ) -> Built {
        let env = Environment::production("shop");
        desired_state(&Inputs {
            config,
            env: &env,
            commit: Some("c0ffee"),
            sync,
            claims,
            scaling: records,
            now: at("2026-03-04T09:00:00Z"),
        })
    }

    #[test]
    fn the_desired_state_is_the_configs_at_its_commit_with_the_sync_override() {
        let config = config(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB)]);
        let built = build(&config, &ScalingRecords::default(), &BTreeMap::new(), Some(SyncPolicy::Manual));
        assert_eq!(built.desired.commit.as_deref(), Some("c0ffee"));
        assert_eq!(built.desired.apps["web"].replicas, 2);
        assert_eq!(built.desired.sync, SyncPolicy::Manual);
        assert!(built.scaling.is_empty() && built.conflicts.is_empty());
        let own = build(&config, &ScalingRecords::default(), &BTreeMap::new(), None);
        assert_eq!(own.desired.sync, SyncPolicy::Auto);
    }

    #[test]
    fn a_rule_recorded_long_ago_takes_the_schedule_in_force_and_a_new_one_its_own_bounds() {
        let config = config(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("scaling/web.yaml", RULE)]);
        let long_ago = build(&config, &ScalingRecords::default(), &BTreeMap::new(), None);
        assert_eq!(long_ago.desired.apps["web"].replicas, 4, "the 08:00 entry is in force at 09:00");
        assert_eq!(long_ago.scaling[0].set_by.as_deref(), Some("0 0 8 * * *"));
        let fresh = ScalingRecords { unrecorded: Unrecorded::Now, ..ScalingRecords::default() };
        let new_rule = build(&config, &fresh, &BTreeMap::new(), None);
        assert_eq!(new_rule.desired.apps["web"].replicas, 2, "a rule that appeared now keeps its own bounds");
        let recorded = ScalingRecords {
            appeared_ms: BTreeMap::from([("web".to_owned(), at("2026-03-01T00:00:00Z").timestamp_millis())]),
            unrecorded: Unrecorded::Now,
            ..ScalingRecords::default()
        };
        assert_eq!(build(&config, &recorded, &BTreeMap::new(), None).desired.apps["web"].replicas, 4);
    }

    #[test]
    fn the_autoscalers_decision_runs_within_the_bounds_in_force() {
        let config = config(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("scaling/web.yaml", RULE)]);
        let decided = |replicas| ScalingRecords {
            decided: BTreeMap::from([("web".to_owned(), replicas)]),
            ..ScalingRecords::default()
        };
        assert_eq!(build(&config, &decided(5), &BTreeMap::new(), None).desired.apps["web"].replicas, 5);
        assert_eq!(build(&config, &decided(9), &BTreeMap::new(), None).desired.apps["web"].replicas, 6, "max");
        assert_eq!(build(&config, &decided(1), &BTreeMap::new(), None).desired.apps["web"].replicas, 4, "min now");
    }

    #[test]
    fn a_host_another_environment_routes_is_left_to_it() {
        let config = config(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB)]);
        let claims = BTreeMap::from([("shop.example.com".to_owned(), "staging".to_owned())]);
        let built = build(&config, &ScalingRecords::default(), &claims, None);
        assert!(built.desired.domains.is_empty(), "{:?}", built.desired.domains);
        assert_eq!(built.conflicts.len(), 1);
    }
}
