//! Jobs in the model and the plan: every validation rule of `kind: Job`, when a Job runs (once per spec, around the
//! apps it hooks), the order hooks put apps and Jobs in, previews, and the fixed point with Jobs.

use std::collections::BTreeMap;

use railyard::model::{self, DesiredState, Environment, Observed, RepoFile};
use railyard::plan::{self, Change, ChangeKind, ObjectKind, Plan, Workload, apply_to};

const PROJECT: &str = "kind: Project\nname: shop\ntimezone: Europe/Berlin\n";
const WEB: &str = "kind: App\nname: web\nimage: web:1\nports: [{ name: http, port: 8080 }]\n";
const DB: &str = "kind: App\nname: db\nimage: db:1\nvolumes: [{ name: data, mount: /data }]\n";

fn files(docs: &[&str]) -> Vec<RepoFile> {
    let mut files = vec![RepoFile::text("railyard.yaml", PROJECT)];
    files.extend(docs.iter().enumerate().map(|(index, doc)| RepoFile::text(&format!("doc{index}.yaml"), doc)));
    files
}

fn errors(docs: &[&str]) -> Vec<String> {
    match model::load(&files(docs)) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

fn desired_in(env: &Environment, docs: &[&str]) -> DesiredState {
    let config = model::load(&files(docs)).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"));
    let mut state = config.desired(env, Some("0123456789abcdef"));
    state.seal(&railyard::model::redact::DigestKey::from_bytes([1; 32]), |_| None);
    state
}

fn desired(docs: &[&str]) -> DesiredState {
    desired_in(&Environment::production("shop"), docs)
}

fn job_change<'a>(plan: &'a Plan, job: &str) -> &'a Change {
    &plan.jobs.iter().find(|action| action.name == job).unwrap_or_else(|| panic!("no action for job {job}")).change
}

fn order(plan: &Plan) -> Vec<String> {
    plan.workloads()
        .into_iter()
        .filter(|workload| workload.change().kind().is_change())
        .map(|workload| format!("{} {}", workload.change().verb(), workload.name()))
        .collect()
}

const MIGRATE: &str = "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nhook: { before: [web] }\n";

#[test]
fn a_job_and_its_fields_read_into_a_spec() {
    let state = desired(&[
        WEB,
        DB,
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nenv: { DATABASE_URL: { secret: db-url } }\nvolumes: [{ name: data, mount: /data }]\nresources: { cpus: \"0.5\", memory: 256Mi }\ntimeout: 2m\nretries: 2\nhook: { before: [web] }\ndependsOn: [db]\n",
        "kind: Job\nname: cleanup\nimage: web:1\nschedule: \"0 0 3 * * *\"\nconcurrency: replace\nstartingDeadline: 1h\nkeep: { succeeded: 1, failed: 2 }\n",
    ]);
    let migrate = &state.jobs["migrate"];
    assert_eq!(migrate.container.image, "web:1", "imageFrom takes the app's image");
    assert_eq!((migrate.timeout_ms, migrate.retries), (120_000, 2));
    assert_eq!((migrate.before.clone(), migrate.depends_on.clone()), (vec!["web".to_owned()], vec!["db".to_owned()]));
    assert_eq!((migrate.container.cpu_millis, migrate.container.memory_bytes), (Some(500), Some(256 << 20)));
    assert!(migrate.container.ports.is_empty() && migrate.schedule.is_none());
    let cleanup = &state.jobs["cleanup"];
    let schedule = cleanup.schedule.as_ref().expect("scheduled");
    assert_eq!((schedule.cron.as_str(), schedule.timezone.as_str()), ("0 0 3 * * *", "Europe/Berlin"));
    assert_eq!(schedule.concurrency, model::kinds::Concurrency::Replace);
    assert_eq!(schedule.starting_deadline_ms, Some(3_600_000));
    assert_eq!((cleanup.keep.succeeded, cleanup.keep.failed), (1, 2));
    assert_eq!(cleanup.timeout_ms, 600_000, "the default timeout is 10 minutes");
}

#[test]
fn every_job_rule_names_its_place_and_the_fix() {
    let long = format!("kind: Job\nname: {}\nimage: x:1\nschedule: \"0 0 3 * * *\"\n", "n".repeat(53));
    let long_name = errors(&[WEB, &long]);
    assert!(long_name.iter().any(|e| e.contains("has 53 characters") && e.contains("at most 52")), "{long_name:?}");
    let cases: [(&[&str], &str); 14] = [
        (
            &[WEB, "kind: Job\nname: web\nimage: x:1\n"],
            "doc1.yaml:2:7: Job `web` has the name of the App at doc0.yaml:2",
        ),
        (&[WEB, "kind: Job\nname: m\n"], "doc1.yaml:2:7: Job `m` has no image"),
        (
            &[WEB, "kind: Job\nname: m\nimage: x:1\nimageFrom: web\n"],
            "doc1.yaml:4:12: a Job takes `image` or `imageFrom`, not both",
        ),
        (
            &[WEB, "kind: Job\nname: m\nimageFrom: wep\n"],
            "doc1.yaml:3:12: imageFrom names `wep`, which is not an App in this repository; did you mean `web`?",
        ),
        (
            &[WEB, "kind: Job\nname: m\nimage: x:1\nhook: { before: [wbe] }\n"],
            "doc1.yaml:4:18: hook.before names `wbe`, which is not an App in this repository; did you mean `web`?",
        ),
        (
            &[WEB, "kind: Job\nname: m\nimage: x:1\nhook: { after: [api] }\n"],
            "hook.after names `api`, which is not an App in this repository; known: `web`",
        ),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\ndependsOn: [wb]\n"], "dependsOn names `wb`"),
        (
            &[WEB, "kind: Job\nname: m\nimage: x:1\nschedule: \"0 0 3 * * *\"\nhook: { before: [web] }\n"],
            "a Job runs either on a `schedule` or as a `hook`",
        ),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\nschedule: \"every day\"\n"], "doc1.yaml:4:11:"),
        (
            &[WEB, "kind: Job\nname: m\nimage: x:1\nports: [{ name: http, port: 80 }]\n"],
            "doc1.yaml:4:8: `ports` is not a field of a Job: a Job serves nothing; make it an App",
        ),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\nreplicas: 2\n"], "doc1.yaml:4:11: `replicas` is not a field of a Job"),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\nconcurrency: forbid\n"], "concurrency applies to a scheduled Job"),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\nretries: 11\n"], "retries: 11 is over the limit of 10"),
        (&[WEB, "kind: Job\nname: m\nimage: x:1\ntimeout: soon\n"], "doc1.yaml:4:10:"),
    ];
    for (docs, expected) in cases {
        let found = errors(docs);
        assert!(found.iter().any(|error| error.contains(expected)), "expected `{expected}` in {found:#?}");
    }
    let duplicate = errors(&[WEB, "kind: Job\nname: m\nimage: x:1\n---\nkind: Job\nname: m\nimage: y:1\n"]);
    assert!(duplicate.iter().any(|e| e.contains("duplicate Job `m` (first defined at doc1.yaml:2)")), "{duplicate:?}");
    let unknown = errors(&[WEB, "kind: Job\nname: m\nimage: x:1\nschedul: \"0 0 3 * * *\"\n"]);
    assert!(unknown.iter().any(|e| e.contains("schedul")), "{unknown:?}");
}

#[test]
fn a_cycle_through_hooks_and_depends_on_is_refused() {
    let found = errors(&[
        WEB,
        "kind: App\nname: api\nimage: api:1\ndependsOn: [web]\n",
        "kind: Job\nname: migrate\nimage: x:1\nhook: { before: [web] }\ndependsOn: [api]\n",
    ]);
    assert!(
        found.iter().any(|e| e.contains("hooks and dependsOn make a cycle")
            && e.contains("job `migrate`")
            && e.contains("app `api`")),
        "{found:#?}"
    );
    assert!(
        errors(&[WEB, DB, "kind: Job\nname: migrate\nimage: x:1\nhook: { before: [web] }\ndependsOn: [db]\n"])
            .is_empty()
    );
}

#[test]
fn a_run_once_job_runs_once_per_spec() {
    let job = "kind: Job\nname: seed\nimage: seed:1\ncommand: [seed]\n";
    let state = desired(&[WEB, job]);
    let first = plan::plan(&state, &Observed::default());
    assert!(matches!(job_change(&first, "seed"), Change::Run { reasons } if reasons[0].contains("not run to success")));
    assert_eq!(first.summary.run, 1);
    let after = apply_to(&Observed::default(), &first);
    let again = plan::plan(&state, &after);
    assert_eq!(*job_change(&again, "seed"), Change::Unchanged);
    assert!(!again.has_changes(), "{again:#?}");
    let changed = desired(&[WEB, "kind: Job\nname: seed\nimage: seed:2\ncommand: [seed]\n"]);
    let next = plan::plan(&changed, &after);
    assert!(matches!(job_change(&next, "seed"), Change::Run { reasons } if reasons == &["its spec changed"]));
    assert!(
        next.jobs[0].diff.as_deref().is_some_and(|diff| diff.contains("+  image: seed:2")),
        "{:?}",
        next.jobs[0].diff
    );
    let retried = desired(&[WEB, "kind: Job\nname: seed\nimage: seed:1\ncommand: [seed]\nretries: 3\n"]);
    assert_eq!(*job_change(&plan::plan(&retried, &after), "seed"), Change::Unchanged, "retries do not make a new run");
}

#[test]
fn a_hook_runs_before_the_apps_it_names_whenever_they_update() {
    let state = desired(&[WEB, MIGRATE]);
    let first = plan::plan(&state, &Observed::default());
    assert_eq!(order(&first), ["run migrate", "create web"]);
    let text = plan::render::text(&first, false);
    let (run, create) =
        (text.find("run Job migrate").expect("run shown"), text.find("create App web").expect("create shown"));
    assert!(run < create, "the plan shows the hook first:\n{text}");
    let converged = apply_to(&Observed::default(), &first);
    assert!(!plan::plan(&state, &converged).has_changes());
    let web2 = "kind: App\nname: web\nimage: web:2\nports: [{ name: http, port: 8080 }]\n";
    let update = plan::plan(&desired(&[web2, MIGRATE]), &converged);
    assert_eq!(order(&update), ["run migrate", "update web"]);
    assert!(
        matches!(job_change(&update, "migrate"), Change::Run { reasons } if reasons.contains(&"its spec changed".to_owned()) && reasons.contains(&"before `web` updates".to_owned()))
    );
    assert_eq!(update.dependencies_of(Workload::App(&update.apps[0])), ["migrate"]);
}

#[test]
fn an_after_hook_waits_for_its_apps_and_scaling_does_not_run_it() {
    let notify = "kind: Job\nname: notify\nimage: n:1\nhook: { after: [web] }\n";
    let state = desired(&[WEB, notify]);
    let first = plan::plan(&state, &Observed::default());
    assert_eq!(order(&first), ["create web", "run notify"]);
    let converged = apply_to(&Observed::default(), &first);
    let scaled =
        desired(&["kind: App\nname: web\nimage: web:1\nreplicas: 3\nports: [{ name: http, port: 8080 }]\n", notify]);
    let plan = plan::plan(&scaled, &converged);
    assert_eq!(order(&plan), ["scale web"]);
}

#[test]
fn scheduled_jobs_are_objects_that_go_through_the_plan_on_every_backend() {
    let cleanup = "kind: Job\nname: cleanup\nimage: c:1\nschedule: \"0 0 3 * * *\"\n";
    let state = desired(&[WEB, cleanup]);
    for schedules_jobs in [false, true] {
        let observed = Observed { schedules_jobs, ..Observed::default() };
        let first = plan::plan(&state, &observed);
        assert_eq!(*job_change(&first, "cleanup"), Change::Create, "a new schedule is a change to approve");
        let on_our_clock = first.jobs[0].notes.iter().any(|note| note.contains("0 0 3 * * * (Europe/Berlin)"));
        assert_eq!(on_our_clock, !schedules_jobs, "{:?}", first.jobs[0].notes);
        let applied = apply_to(&observed, &first);
        assert!(!plan::plan(&state, &applied).has_changes());
        let later = desired(&[WEB, "kind: Job\nname: cleanup\nimage: c:1\nschedule: \"0 0 4 * * *\"\n"]);
        let changed = plan::plan(&later, &applied);
        assert!(matches!(job_change(&changed, "cleanup"), Change::Update { fields } if fields == &["schedule.cron"]));
        let gone = plan::plan(&desired(&[WEB]), &applied);
        assert_eq!(*job_change(&gone, "cleanup"), Change::Delete);
        assert!(!plan::plan(&desired(&[WEB]), &apply_to(&applied, &gone)).has_changes());
    }
}

#[test]
fn a_failed_hook_leaves_its_apps_unchanged_in_what_runs() {
    // The contract backends are tested against: what the plan says, once applied, is a fixed point; a job that
    // failed is planned again, its app with it.
    let state = desired(&[WEB, MIGRATE]);
    let observed = Observed::default();
    let plan = plan::plan(&state, &observed);
    let apps_only = Plan { jobs: Vec::new(), ..plan.clone() };
    let after = apply_to(&observed, &Plan { apps: Vec::new(), ..apps_only });
    let again = plan::plan(&state, &after);
    assert_eq!(order(&again), ["run migrate", "create web"]);
}

#[test]
fn previews_run_hooks_but_not_schedules_unless_told() {
    let project = "kind: Project\nname: shop\npreviews: { enabled: true }\n";
    let cleanup = "kind: Job\nname: cleanup\nimage: c:1\nschedule: \"0 0 3 * * *\"\n";
    let load = |project: &str| {
        let mut files = vec![RepoFile::text("railyard.yaml", project)];
        files.extend([WEB, MIGRATE, cleanup].iter().enumerate().map(|(i, d)| RepoFile::text(&format!("d{i}.yaml"), d)));
        model::load(&files).unwrap_or_else(|invalid| panic!("{invalid}"))
    };
    let preview = Environment::pull_request("shop", 7);
    let state = load(project).desired(&preview, None);
    assert_eq!(state.jobs.keys().collect::<Vec<_>>(), ["migrate"]);
    assert!(
        state.warnings.iter().any(|w| w.contains("scheduled Jobs do not run in previews") && w.contains("cleanup"))
    );
    assert!(state.jobs["migrate"].container.cpu_millis.is_some(), "a preview's Job is capped as its apps are");
    assert_eq!(
        state.jobs["migrate"].container.pull,
        model::kinds::PullPolicy::Always,
        "a preview's Job never runs an image only the host has without pulling it"
    );
    let local = "kind: Job\nname: seed\nimage: private:1\npull: never\n";
    let mut files = vec![RepoFile::text("railyard.yaml", project), RepoFile::text("d0.yaml", WEB)];
    files.push(RepoFile::text("d1.yaml", local));
    let blocked = model::load(&files).unwrap_or_else(|invalid| panic!("{invalid}")).desired(&preview, None);
    assert!(
        blocked.blockers.iter().any(|b| b.contains("Job `seed`") && b.contains("pull: never")),
        "{:?}",
        blocked.blockers
    );
    let told =
        load("kind: Project\nname: shop\npreviews: { enabled: true, schedules: true }\n").desired(&preview, None);
    assert_eq!(told.jobs.len(), 2);
}

#[test]
fn jobs_removed_from_git_are_deleted_only_in_their_own_environment() {
    let mut observed = Observed::default();
    for (name, env) in [("old", "production"), ("theirs", "staging")] {
        let job = model::ObservedJob {
            name: name.into(),
            env: env.into(),
            succeeded: Some("x".into()),
            ..Default::default()
        };
        observed.jobs.insert(name.to_owned(), job);
    }
    let plan = plan::plan(&desired(&[WEB]), &observed);
    let deletes: Vec<&str> =
        plan.jobs.iter().filter(|a| a.change.kind() == ChangeKind::Delete).map(|a| a.name.as_str()).collect();
    assert_eq!(deletes, ["old"]);
    assert_eq!(ObjectKind::Job.as_str(), "Job");
    let _ = BTreeMap::<String, String>::new();
}

#[test]
fn secrets_of_a_job_never_reach_its_diff() {
    let job =
        "kind: Job\nname: seed\nimage: s:1\nenv: { API_TOKEN: canary-9f8e7d, URL: \"postgres://u:pw-canary@db/x\" }\n";
    let plan = plan::plan(&desired(&[WEB, job]), &Observed::default());
    let shown = serde_json::to_string(&plan).expect("serialises") + &plan::render::text(&plan, false);
    assert!(!shown.contains("canary-9f8e7d") && !shown.contains("pw-canary"), "{shown}");
}
