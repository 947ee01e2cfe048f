//! The planner: create, update, scale, repair, delete, unchanged, ordering, redaction, and the fixed point
//! `plan(desired, apply_to(observed, plan)) == nothing to do`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use railyard::model::{self, DesiredState, Environment, HealthState, Observed, ObservedDomain, ReplicaState, RepoFile};
use railyard::plan::{self, Change, ChangeKind, ObjectKind, Plan, apply_to};

const PROJECT: &str = "kind: Project\nname: shop\n";

fn desired(apps: &str) -> DesiredState {
    let files = vec![RepoFile::text("railyard.yaml", PROJECT), RepoFile::text("apps.yaml", apps)];
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"));
    let mut state = config.desired(&Environment::production("shop"), Some("0123456789abcdef"));
    // As railyard does before planning: sensitive literals get their keyed digest (no secret store here).
    state.seal(&railyard::model::redact::DigestKey::from_bytes([1; 32]), |_| None);
    state
}

fn converged(state: &DesiredState) -> Observed {
    let mut observed = Observed { domains: Some(BTreeMap::new()), ..Observed::default() };
    observed = apply_to(&observed, &plan::plan(state, &observed));
    observed
}

fn change_of<'a>(plan: &'a Plan, app: &str) -> &'a Change {
    &plan.apps.iter().find(|action| action.name == app).unwrap_or_else(|| panic!("no action for {app}")).change
}

const WEB: &str =
    "kind: App\nname: web\nimage: web:1\nreplicas: 2\nenv: { LOG_LEVEL: info }\nports: [{ name: http, port: 8080 }]\n";

#[test]
fn a_change_has_a_kind_that_reads_and_serialises_as_its_verb() {
    let changes = [
        (Change::Create, ChangeKind::Create, "create"),
        (Change::Update { fields: vec!["image".into()] }, ChangeKind::Update, "update"),
        (Change::Scale { from: 1, to: 3 }, ChangeKind::Scale, "scale"),
        (Change::Repair { reasons: Vec::new() }, ChangeKind::Repair, "repair"),
        (Change::Delete, ChangeKind::Delete, "delete"),
        (Change::Unchanged, ChangeKind::Unchanged, "unchanged"),
    ];
    for (change, kind, verb) in changes {
        assert_eq!(change.kind(), kind);
        assert_eq!((kind.to_string(), change.verb()), (verb.to_owned(), verb));
        assert_eq!(serde_json::to_value(kind).expect("serialises"), verb);
        assert_eq!(kind.is_change(), kind != ChangeKind::Unchanged);
    }
    assert_eq!(serde_json::to_value(ObjectKind::Domain).expect("serialises"), "Domain");
    assert_eq!(ObjectKind::App.to_string(), "App");
}

#[test]
fn everything_is_created_on_an_empty_host() {
    let state = desired(WEB);
    let plan = plan::plan(&state, &Observed::default());
    assert_eq!(change_of(&plan, "web"), &Change::Create);
    assert_eq!(plan.summary.create, 1);
    let diff = plan.apps[0].diff.as_deref().unwrap_or_default();
    assert!(diff.contains("+++ git/App/web"), "{diff}");
    assert!(diff.contains("+  image: web:1"), "{diff}");
}

#[test]
fn nothing_to_do_when_converged() {
    let state = desired(WEB);
    let plan = plan::plan(&state, &converged(&state));
    assert_eq!(change_of(&plan, "web"), &Change::Unchanged);
    assert!(!plan.has_changes());
    assert_eq!(plan.apps[0].diff, None);
}

#[test]
fn an_image_change_is_an_update_naming_the_field_with_a_diff() {
    let observed = converged(&desired(WEB));
    let plan = plan::plan(&desired(&WEB.replace("web:1", "web:2").replace("info", "debug")), &observed);
    assert_eq!(change_of(&plan, "web"), &Change::Update { fields: vec!["env.LOG_LEVEL".into(), "image".into()] });
    let diff = plan.apps[0].diff.as_deref().unwrap_or_default();
    assert!(diff.contains("-  image: web:1\n+  image: web:2"), "{diff}");
    assert!(diff.contains("-    LOG_LEVEL: info\n+    LOG_LEVEL: debug"), "{diff}");
}

#[test]
fn a_replica_count_change_is_a_scale() {
    let observed = converged(&desired(WEB));
    let plan = plan::plan(&desired(&WEB.replace("replicas: 2", "replicas: 5")), &observed);
    assert_eq!(change_of(&plan, "web"), &Change::Scale { from: 2, to: 5 });
}

#[test]
fn a_stopped_or_removed_replica_is_repaired() {
    let state = desired(WEB);
    let mut stopped = converged(&state);
    if let Some(app) = stopped.apps.get_mut("web") {
        app.replicas[1].state = ReplicaState::Exited;
    }
    let plan = plan::plan(&state, &stopped);
    assert_eq!(change_of(&plan, "web"), &Change::Repair { reasons: vec!["replica shop-web-2 is exited".into()] });

    let mut removed = converged(&state);
    if let Some(app) = removed.apps.get_mut("web") {
        app.replicas.pop();
    }
    assert_eq!(
        change_of(&plan::plan(&state, &removed), "web"),
        &Change::Repair { reasons: vec!["1 of 2 replicas exist".into()] }
    );

    let mut unhealthy = converged(&state);
    if let Some(app) = unhealthy.apps.get_mut("web") {
        app.replicas[0].health = HealthState::Unhealthy;
    }
    assert_eq!(
        change_of(&plan::plan(&state, &unhealthy), "web"),
        &Change::Repair { reasons: vec!["replica shop-web-1 is unhealthy".into()] }
    );
}

#[test]
fn a_replica_added_by_hand_is_repaired() {
    let state = desired(WEB);
    let mut observed = converged(&state);
    if let Some(app) = observed.apps.get_mut("web") {
        let mut extra = app.replicas[0].clone();
        extra.number = 3;
        app.replicas.push(extra);
    }
    assert_eq!(
        change_of(&plan::plan(&state, &observed), "web"),
        &Change::Repair { reasons: vec!["3 replicas exist, 2 wanted".into()] }
    );
}

#[test]
fn drift_the_backend_reports_is_repaired_and_gone_once_applied() {
    let state = desired(WEB);
    let mut observed = converged(&state);
    if let Some(app) = observed.apps.get_mut("web") {
        app.replicas[1].state = ReplicaState::Exited;
        app.drift = vec!["Service web was deleted by another manager".into()];
    }
    let plan = plan::plan(&state, &observed);
    assert_eq!(
        change_of(&plan, "web"),
        &Change::Repair {
            reasons: vec!["replica shop-web-2 is exited".into(), "Service web was deleted by another manager".into()]
        }
    );
    assert_eq!(plan.summary.repair, 1);
    let after = apply_to(&observed, &plan);
    assert!(after.apps["web"].drift.is_empty(), "{:?}", after.apps["web"].drift);
    assert!(!plan::plan(&state, &after).has_changes());
}

#[test]
fn replica_numbers_are_the_backends_business() {
    // Two replicas with one number is drift only a backend that numbers its replicas can tell (Docker reports it
    // through `drift`); the planner counts and checks health, whatever the numbers.
    let state = desired(WEB);
    let mut observed = converged(&state);
    if let Some(app) = observed.apps.get_mut("web") {
        app.replicas[1].number = 1;
    }
    assert_eq!(change_of(&plan::plan(&state, &observed), "web"), &Change::Unchanged);
}

#[test]
fn an_observed_app_without_drift_reads_and_writes_as_before() {
    let observed = converged(&desired(WEB));
    let json = serde_json::to_value(&observed.apps["web"]).expect("serialises");
    assert!(json.get("drift").is_none(), "{json}");
    let read: model::ObservedApp = serde_json::from_value(json).expect("reads without drift");
    assert_eq!(read, observed.apps["web"]);
}

#[test]
fn a_half_finished_rolling_update_is_finished() {
    let old = converged(&desired(WEB));
    let new_state = desired(&WEB.replace("web:1", "web:2"));
    let new = converged(&new_state);
    let mut mixed = old.clone();
    if let (Some(app), Some(new_app)) = (mixed.apps.get_mut("web"), new.apps.get("web")) {
        app.replicas[0] = new_app.replicas[0].clone();
        app.last_applied = new_app.last_applied.clone();
    }
    assert_eq!(
        change_of(&plan::plan(&new_state, &mixed), "web"),
        &Change::Update { fields: vec!["1 replica(s) on an older spec".into()] }
    );
}

#[test]
fn apps_removed_from_git_are_deleted_only_in_their_own_environment() {
    let both = desired(&format!("{WEB}---\nkind: App\nname: api\nimage: api:1\n"));
    let mut observed = converged(&both);
    let mut foreign = observed.apps["api"].clone();
    foreign.name = "other".into();
    foreign.env = "pr-7".into();
    observed.apps.insert("other".into(), foreign);
    let plan = plan::plan(&desired(WEB), &observed);
    assert_eq!(change_of(&plan, "api"), &Change::Delete);
    assert!(plan.apps.iter().all(|action| action.name != "other"), "another environment's app must not be touched");
    let diff = plan.apps.iter().find(|a| a.name == "api").and_then(|a| a.diff.as_deref()).unwrap_or_default();
    assert!(diff.contains("-  image: api:1"), "{diff}");
    assert_eq!(plan.summary.delete, 1);
}

#[test]
fn creates_follow_depends_on_and_deletes_go_in_reverse() {
    let apps = "kind: App\nname: web\nimage: w\ndependsOn: [api]\n---\nkind: App\nname: api\nimage: a\ndependsOn: [db, cache]\n---\nkind: App\nname: db\nimage: d\n---\nkind: App\nname: cache\nimage: c\n---\nkind: App\nname: admin\nimage: x\ndependsOn: [db]\n";
    let state = desired(apps);
    let plan = plan::plan(&state, &Observed::default());
    let order: Vec<&str> = plan.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(order, ["cache", "db", "admin", "api", "web"]);
    let teardown = plan::plan(&desired("kind: App\nname: other\nimage: o\n"), &converged(&state));
    let deleted: Vec<&str> =
        teardown.apps.iter().filter(|a| a.change == Change::Delete).map(|a| a.name.as_str()).collect();
    assert_eq!(deleted, ["web", "api", "admin", "db", "cache"]);
}

#[test]
fn a_cycle_reaching_the_planner_loses_no_app() {
    let mut state =
        desired("kind: App\nname: a\nimage: a\n---\nkind: App\nname: b\nimage: b\n---\nkind: App\nname: c\nimage: c\n");
    // Validation rejects cycles; the planner must still terminate and keep every app if handed one.
    for (app, dependency) in [("a", "b"), ("b", "a")] {
        if let Some(spec) = state.apps.get_mut(app) {
            spec.depends_on = vec![dependency.into()];
        }
    }
    let order: Vec<String> = plan::dependency_order(&state.apps).iter().map(|a| a.name.clone()).collect();
    assert_eq!(order, ["c", "a", "b"]);
}

#[test]
fn secrets_never_reach_diffs() {
    let apps = "kind: App\nname: api\nimage: api:1\nenv:\n  DB_PASSWORD: hunter2-literal\n  DATABASE_URL: postgres://shop:pg-pass-9@db/shop\n  TOKEN: { secret: api-token }\n";
    let observed = converged(&desired(apps));
    let changed = apps.replace("hunter2-literal", "correct-horse").replace("pg-pass-9", "pg-pass-10");
    let plan = plan::plan(&desired(&changed), &observed);
    let action = &plan.apps[0];
    let Change::Update { fields } = &action.change else { panic!("expected update, got {:?}", action.change) };
    assert_eq!(fields, &vec!["env.DATABASE_URL".to_owned(), "env.DB_PASSWORD".to_owned()]);
    let diff = action.diff.as_deref().unwrap_or_default();
    for secret in ["hunter2-literal", "correct-horse", "pg-pass-9", "pg-pass-10"] {
        assert!(!diff.contains(secret), "{secret} leaked into:\n{diff}");
    }
    assert!(diff.contains("DB_PASSWORD: <redacted hmac-sha256:"), "{diff}");
    assert!(diff.contains("postgres://<redacted hmac-sha256:"), "{diff}");
    assert!(diff.contains("secret: api-token"), "{diff}");
    let stored = serde_json::to_string(&apply_to(&observed, &plan)).unwrap_or_default();
    assert!(!stored.contains("correct-horse"), "last-applied must be redacted: {stored}");
    let rendered = plan::render::text(&plan, false);
    assert!(
        !rendered.contains("correct-horse") && rendered.contains("update App api (env.DATABASE_URL, env.DB_PASSWORD)"),
        "{rendered}"
    );
}

#[test]
fn domains_are_planned_when_the_backend_reports_them() {
    let files = vec![
        RepoFile::text("railyard.yaml", PROJECT),
        RepoFile::text("apps.yaml", WEB),
        RepoFile::text("d.yaml", "kind: Domain\nhost: shop.example.com\napp: web\nport: http\ntls: internal\n"),
    ];
    let config = model::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let state = config.desired(&Environment::production("shop"), None);
    let mut observed = Observed { domains: Some(BTreeMap::new()), ..Observed::default() };
    let first = plan::plan(&state, &observed);
    assert_eq!(first.domains[0].change, Change::Create);
    observed = apply_to(&observed, &first);
    assert!(!plan::plan(&state, &observed).has_changes());
    if let Some(domains) = observed.domains.as_mut() {
        domains.insert(
            "old.example.com".into(),
            ObservedDomain {
                env: "production".into(),
                last_applied: state.domains["shop.example.com"].clone(),
                drift: Vec::new(),
            },
        );
    }
    let plan = plan::plan(&state, &observed);
    assert_eq!(
        plan.domains.iter().map(|d| (d.name.as_str(), d.change.kind())).collect::<Vec<_>>(),
        [("shop.example.com", ChangeKind::Unchanged), ("old.example.com", ChangeKind::Delete)]
    );
    let unobserved = plan::plan(&state, &Observed::default());
    assert!(unobserved.domains.is_empty(), "no domain actions when the backend does not report domains");
}

#[test]
fn previews_get_hosts_from_the_template() {
    let project = "kind: Project\nname: shop\npreviews:\n  enabled: true\n  hostTemplate: \"{app}-pr-{number}.preview.example.com\"\n";
    let files = vec![
        RepoFile::text("railyard.yaml", project),
        RepoFile::text("apps.yaml", WEB),
        RepoFile::text(
            "d.yaml",
            "kind: Domain\nhost: shop.example.com\naliases: [www.shop.example.com]\napp: web\nport: http\n",
        ),
    ];
    let config = model::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let env = Environment::pull_request("shop", 42);
    assert_eq!((env.name.as_str(), env.project.as_str()), ("pr-42", "shop-pr-42"));
    let state = config.desired(&env, None);
    assert_eq!(state.domains.keys().collect::<Vec<_>>(), ["web-pr-42.preview.example.com"]);
    assert!(state.domains["web-pr-42.preview.example.com"].aliases.is_empty());
    let branch = Environment::branch("shop", "preview/New Checkout!");
    assert_eq!(
        (branch.name.as_str(), branch.project.as_str()),
        ("branch-preview-new-checkout", "shop-branch-preview-new-checkout")
    );
}

#[test]
fn scaling_rules_bound_the_replicas() {
    let rule = "---\nkind: ScalingRule\napp: web\nmin: 3\nmax: 6\n";
    assert_eq!(desired(&format!("{WEB}{rule}")).apps["web"].replicas, 3, "raised to min");
    let many = WEB.replace("replicas: 2", "replicas: 9");
    assert_eq!(desired(&format!("{many}{rule}")).apps["web"].replicas, 6, "cut to max");
    let within = WEB.replace("replicas: 2", "replicas: 4");
    assert_eq!(desired(&format!("{within}{rule}")).apps["web"].replicas, 4, "kept within bounds");
}

#[test]
fn a_scale_down_settles_although_kept_replicas_remember_the_old_count() {
    let observed = converged(&desired(WEB));
    let down = desired(&WEB.replace("replicas: 2", "replicas: 1"));
    let plan = plan::plan(&down, &observed);
    assert_eq!(change_of(&plan, "web"), &Change::Scale { from: 2, to: 1 });
    let after = apply_to(&observed, &plan);
    assert_eq!(after.apps["web"].last_applied.as_ref().map(|spec| spec.replicas), Some(2), "labels are not rewritten");
    let again = plan::plan(&down, &after);
    assert!(!again.has_changes(), "{:?}", again.apps[0].change);
}

#[test]
fn an_update_of_an_app_with_a_pinned_host_port_says_it_stops_first() {
    let pinned = WEB.replace("port: 8080 }", "port: 8080, hostPort: 18080 }").replace("replicas: 2", "replicas: 1");
    let observed = converged(&desired(&pinned));
    let plan = plan::plan(&desired(&pinned.replace("web:1", "web:2")), &observed);
    assert!(plan.apps[0].notes.iter().any(|note| note.contains("stop-first: brief downtime")), "{:?}", plan.apps[0]);
    assert!(plan::render::text(&plan, false).contains("note: stop-first: brief downtime"));
    let unpinned = plan::plan(&desired(&WEB.replace("web:1", "web:2")), &converged(&desired(WEB)));
    assert!(unpinned.apps[0].notes.is_empty(), "side by side without a pinned port");
}

#[test]
fn an_unreachable_proxy_matters_only_to_environments_with_domains() {
    let state = desired(WEB);
    let observed = Observed { domains: Some(BTreeMap::new()), proxy_error: Some("down".into()), ..converged(&state) };
    assert_eq!(plan::plan(&state, &observed).proxy_error, None);
    let with_domain = desired(&format!("{WEB}---\nkind: Domain\nhost: shop.example.com\napp: web\nport: http\n"));
    assert_eq!(plan::plan(&with_domain, &observed).proxy_error.as_deref(), Some("down"));
    let json = serde_json::to_string(&plan::plan(&with_domain, &observed)).unwrap_or_default();
    assert!(json.contains("\"proxyError\":\"down\""), "camelCase like every other field: {json}");
}

// The fixed point, over generated desired and observed states.

fn arb_app() -> impl Strategy<Value = (String, String, u32, bool, Vec<usize>)> {
    ("[a-e]", "img-[0-9]", 0u32..4, any::<bool>(), proptest::collection::vec(0usize..5, 0..3))
}

fn arb_config() -> impl Strategy<Value = String> {
    proptest::collection::vec(arb_app(), 0..6).prop_map(|apps| {
        let mut seen = std::collections::BTreeSet::new();
        let names: Vec<String> = apps.iter().map(|a| a.0.clone()).filter(|n| seen.insert(n.clone())).collect();
        let mut docs = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let (_, image, replicas, secret, deps) = &apps[apps.iter().position(|a| &a.0 == name).unwrap_or(0)];
            // Depend only on earlier apps, so the generated config is acyclic as validation demands.
            let deps: std::collections::BTreeSet<&String> =
                deps.iter().filter(|d| **d < index).map(|d| &names[*d]).collect();
            let deps: Vec<&str> = deps.into_iter().map(String::as_str).collect();
            let env = if *secret { "env: { API_TOKEN: abc, DB: { secret: db } }\n" } else { "" };
            docs.push(format!(
                "kind: App\nname: {name}\nimage: {image}\nreplicas: {replicas}\ndependsOn: [{}]\n{env}",
                deps.join(", ")
            ));
        }
        docs.join("---\n")
    })
}

fn arb_observed_mutation() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((0usize..6, 0u8..6), 0..6)
}

/// Drifts a converged state the way people and crashes do.
fn mutate(mut observed: Observed, mutations: &[(usize, u8)]) -> Observed {
    for (index, kind) in mutations {
        let names: Vec<String> = observed.apps.keys().cloned().collect();
        let Some(name) = names.get(index % names.len().max(1)) else { continue };
        let Some(app) = observed.apps.get_mut(name) else { continue };
        match kind {
            0 => app.replicas.truncate(app.replicas.len().saturating_sub(1)),
            1 => app.replicas.iter_mut().for_each(|r| r.state = ReplicaState::Exited),
            2 => app.replicas.iter_mut().for_each(|r| r.spec_hash = "stale".into()),
            3 => {
                if let Some(first) = app.replicas.first().cloned() {
                    app.replicas.push(first);
                }
            }
            4 => app.replicas.iter_mut().for_each(|r| r.health = HealthState::Unhealthy),
            _ => {
                observed.apps.remove(name);
            }
        }
    }
    observed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planning_after_applying_a_plan_finds_nothing_to_do(before in arb_config(), after in arb_config(), drift in arb_observed_mutation()) {
        let project = "kind: Project\nname: shop\n";
        let load = |apps: &str| {
            let files = vec![RepoFile::text("railyard.yaml", project), RepoFile::text("apps.yaml", apps)];
            model::load(&files).map(|config| config.desired(&Environment::production("shop"), Some("c0ffee")))
        };
        let (Ok(old), Ok(new)) = (load(&before), load(&after)) else { return Err(TestCaseError::fail("generated config invalid")) };
        let observed = mutate(converged(&old), &drift);
        let plan = plan::plan(&new, &observed);
        let applied = apply_to(&observed, &plan);
        assert_runs_as_declared(&new, &applied)?;
        let again = plan::plan(&new, &applied);
        prop_assert!(!again.has_changes(), "second plan not empty: {:?}", again.summary);
    }

    #[test]
    fn any_sequence_of_replica_counts_settles_after_each_apply(counts in proptest::collection::vec(0u32..5, 1..8)) {
        let mut observed = Observed::default();
        for count in counts {
            let state = desired(&WEB.replace("replicas: 2", &format!("replicas: {count}")));
            observed = apply_to(&observed, &plan::plan(&state, &observed));
            assert_runs_as_declared(&state, &observed)?;
            let again = plan::plan(&state, &observed);
            prop_assert!(!again.has_changes(), "after applying {count} replicas: {:?}", again.apps);
        }
    }
}

/// Every declared app runs exactly its replicas, all serving on the declared spec, and nothing else runs.
fn assert_runs_as_declared(state: &DesiredState, observed: &Observed) -> Result<(), TestCaseError> {
    for (name, spec) in &state.apps {
        let replicas = observed.apps.get(name).map(|app| app.replicas.clone()).unwrap_or_default();
        prop_assert_eq!(replicas.len() as u32, spec.replicas, "replicas of {}", name);
        for replica in &replicas {
            prop_assert_eq!(&replica.spec_hash, &spec.spec_hash(), "spec of {}", &replica.id);
            prop_assert!(replica.is_serving(), "{} is not serving", &replica.id);
        }
        let mut numbers: Vec<u32> = replicas.iter().map(|replica| replica.number).collect();
        numbers.sort_unstable();
        prop_assert_eq!(numbers, (1..=spec.replicas).collect::<Vec<_>>(), "numbers of {}", name);
    }
    let extra: Vec<&String> = observed
        .apps
        .iter()
        .filter(|(name, app)| !state.apps.contains_key(*name) && !app.replicas.is_empty())
        .map(|(n, _)| n)
        .collect();
    prop_assert!(extra.is_empty(), "apps that git does not declare still run: {:?}", extra);
    Ok(())
}

/// Issue 24: where the autoscaler is an object the backend applies (Kubernetes' HorizontalPodAutoscaler), a
/// ScalingRule added, changed or removed with nothing else is a change of the app; where railyard itself scales
/// (Docker), the rule is read from git and touches no container.
#[test]
fn a_scaling_rule_alone_changes_the_app_only_where_the_backend_applies_autoscalers() {
    let web = format!("{WEB}resources: {{ cpus: \"0.5\" }}\n");
    let plain = desired(&web);
    let rule = "---\nkind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n";
    let ruled = desired(&format!("{web}{rule}"));
    for applies_autoscalers in [true, false] {
        let observed = Observed { applies_autoscalers, ..converged(&plain) };
        let plan = plan::plan(&ruled, &observed);
        let expected = if applies_autoscalers {
            Change::Update { fields: vec!["autoscale".to_owned()] }
        } else {
            Change::Unchanged
        };
        assert_eq!(change_of(&plan, "web"), &expected, "applies autoscalers: {applies_autoscalers}");
        let after = apply_to(&observed, &plan);
        assert!(!plan::plan(&ruled, &after).has_changes(), "and then nothing: {applies_autoscalers}");
        let removed = plan::plan(&plain, &after);
        assert_eq!(removed.has_changes(), applies_autoscalers, "the rule removed: {applies_autoscalers}");
    }
}
