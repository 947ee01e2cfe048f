//! Jobs on the Kubernetes backend against the fake API server (issue 26): a before-hook runs to success before its
//! app's Deployment is written, and not again for the same spec (the no-op apply sends no write and no per-object
//! read); a failing hook leaves the Deployment untouched and the sync carries its exit code and last log lines,
//! secrets redacted; a restart in the middle of a run attaches to the Job instead of creating it twice; a scheduled
//! Job is a CronJob (time zone, concurrency policy, history limits), `run_job` makes a Job from its template, and
//! removing it from git deletes it; the Job and CronJob manifests pass `kubernetes-validate --strict`; the runs the
//! CronJob controller starts by itself come back from `finished_runs` once each (trigger, key, exit code, log tail
//! with the Secret's values redacted), with no log read once they are known, and never railyard's own runs.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::kube_backend::{KubeCase, SECRET_VALUE, app, plan_of, result_of, secrets, sync, sync_ok, writes};
use support::kubernetes_validate::assert_valid_kubernetes;

use railyard::backend::kubernetes::KubernetesBackendSettings;
use railyard::backend::kubernetes::jobs::{MAX_FOUND_RUNS, job_from_cron_job};
use railyard::backend::kubernetes::mapping::{self, KubernetesSettings};
use railyard::backend::{ActionResult, Backend, JobOutcome, JobTrigger};
use railyard::plan::ChangeKind;

const MIGRATE: &str = "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\n\
                       env: { DB_PASSWORD: { secret: db-password } }\nretries: 2\nhook: { before: [web] }\n";

fn job_change(plan: &railyard::plan::Plan, job: &str) -> ChangeKind {
    plan.jobs.iter().find(|action| action.name == job).map_or(ChangeKind::Unchanged, |action| action.change.kind())
}

/// The paths of the writes the fake logged, in order.
fn written_paths(case: &KubeCase) -> Vec<String> {
    writes(&case.fake.requests()).iter().map(|request| format!("{} {}", request.method, request.path)).collect()
}

fn job_name(case: &KubeCase, job: &str) -> String {
    let spec = &case.repo.desired().jobs[job];
    mapping::job_object_name(job, &spec.spec_hash())
}

#[test]
fn a_before_hook_runs_before_its_app_is_written_and_not_again_for_the_same_spec() {
    let case = KubeCase::new("hook-order", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    // Its own image: an update of web alone runs the same spec again.
    case.repo.write("jobs/migrate.yaml", &MIGRATE.replace("imageFrom: web", "image: acme/migrate:1"));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        let (plan, report) = sync(backend, &desired).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(job_change(&plan, "migrate"), ChangeKind::Run);
        let job = job_name(&case, "migrate");
        let order = written_paths(&case);
        let position = |suffix: &str| {
            order.iter().position(|path| path.ends_with(suffix)).unwrap_or_else(|| panic!("{suffix} in {order:?}"))
        };
        assert!(position(&format!("jobs/{job}")) < position("deployments/web"), "{order:?}");
        // The Deployment is written only once the Job completed: the Job was read back Complete before.
        assert_eq!(report.job_runs.len(), 1, "{report:?}");
        let run = &report.job_runs[0];
        assert_eq!(
            (run.outcome.clone(), run.trigger.clone(), run.tries),
            (JobOutcome::Succeeded, JobTrigger::Apply, 1)
        );

        let created = fake.object("jobs", ns, &job).expect("the Job");
        assert_eq!(created.pointer("/spec/backoffLimit"), Some(&json!(2)));
        assert_eq!(created.pointer("/spec/ttlSecondsAfterFinished"), Some(&json!(mapping::JOB_TTL_SECONDS)));
        assert_eq!(created.pointer("/spec/template/spec/restartPolicy"), Some(&json!("Never")));
        assert_eq!(created.pointer("/metadata/labels/railyard.dev~1job"), Some(&json!("migrate")));
        assert_eq!(created.pointer("/metadata/labels/app.kubernetes.io~1managed-by"), Some(&json!("railyard")));
        let env = created.pointer("/spec/template/spec/containers/0/env/0").cloned().unwrap_or(Value::Null);
        assert_eq!(env.pointer("/valueFrom/secretKeyRef/key"), Some(&json!("db-password")), "{env}");
        assert!(!created.to_string().contains(SECRET_VALUE));
        let record = fake.object("configmaps", ns, mapping::JOB_RECORD_NAME).expect("the record");
        assert_eq!(record.pointer("/data/migrate"), Some(&json!(desired.jobs["migrate"].spec_hash())));

        // Nothing changed: the hook does not run again, and nothing is written or read object by object.
        fake.clear_requests();
        let (again, report) = sync(backend, &desired).await;
        assert!(!again.has_changes(), "{:?}", again.summary);
        assert!(report.job_runs.is_empty() && report.outcomes.is_empty(), "{report:?}");
        let requests = fake.requests();
        assert!(writes(&requests).is_empty(), "a no-op wrote: {:?}", writes(&requests));
        assert!(requests.iter().all(|request| request.query.contains("labelSelector")), "{requests:?}");

        // The app updates: its hook runs again first, the finished Job of the same spec replaced by a new one.
        case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
        fake.clear_requests();
        let (plan, report) = sync(backend, &case.repo.desired()).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(job_change(&plan, "migrate"), ChangeKind::Run);
        assert_eq!(report.job_runs.len(), 1);
        let order = written_paths(&case);
        let step = |method: &str, suffix: &str| {
            order.iter().position(|path| path.starts_with(method) && path.ends_with(suffix))
        };
        let (deleted, created) = (step("DELETE", &format!("jobs/{job}")), step("PATCH", &format!("jobs/{job}")));
        assert!(deleted.is_some() && deleted < created && created < step("PATCH", "deployments/web"), "{order:?}");
        assert_eq!(case.image("web"), "nginx:1.28");
    });
}

#[test]
fn a_failing_hook_leaves_the_deployment_untouched_and_reports_its_exit_code_and_last_lines() {
    let case = KubeCase::new("hook-fails", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.repo.write("jobs/migrate.yaml", MIGRATE);
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
        case.repo.write("jobs/migrate.yaml", &MIGRATE.replace("[/web, migrate]", "[sh, -c, 'echo migrating; exit 3']"));
        let lines: String = (1..=15).map(|n| format!("step {n}\n")).collect();
        fake.set_job_log(
            "migrate-",
            &format!("{lines}connecting with {SECRET_VALUE}\nerror: relation \"users\" missing\n"),
        );
        fake.clear_requests();
        let (plan, report) = sync(backend, &case.repo.desired()).await;
        assert_eq!(job_change(&plan, "migrate"), ChangeKind::Run);
        assert!(!report.succeeded());
        let ActionResult::Failed { error } = result_of(&report, "migrate") else { panic!("{report:?}") };
        assert!(error.starts_with("job `migrate` failed after 3 tries (exit code 3"), "{error}");
        assert!(error.contains("error: relation \"users\" missing") && error.contains("step 15"), "{error}");
        assert!(!error.contains("step 5\n"), "only the last lines: {error}");
        assert!(error.contains("connecting with <redacted>") && !error.contains(SECRET_VALUE), "{error}");
        assert!(matches!(result_of(&report, "web"), ActionResult::Skipped { .. }), "{report:?}");
        let run = &report.job_runs[0];
        assert_eq!(run.outcome.exit_code(), Some(3));
        assert_eq!(run.tries, 3);
        assert!(!run.output.contains(SECRET_VALUE));
        // The Deployment was not touched: the old version keeps running.
        assert!(!written_paths(&case).iter().any(|path| path.contains("deployments")), "{:?}", written_paths(&case));
        assert_eq!(case.image("web"), "nginx:1.27");
        assert_eq!(fake.pods(ns).iter().filter(|pod| pod.to_string().contains("\"exitCode\":3")).count(), 3);
    });
}

#[test]
fn a_restart_in_the_middle_of_a_run_attaches_to_the_job_instead_of_creating_it_twice() {
    let case = KubeCase::new("job-restart", "");
    case.repo.write("jobs/seed.yaml", "kind: Job\nname: seed\nimage: acme/seed:1\ncommand: [sleep, '1']\n");
    let (fake, ns) = (&case.fake, case.ns());
    let job = job_name(&case, "seed");
    case.run_default(async |backend| {
        // railyard stops while the Job runs (the apply is dropped mid-wait).
        let interrupted = tokio::time::timeout(Duration::from_millis(400), sync(backend, &case.repo.desired())).await;
        assert!(interrupted.is_err(), "the run outlasts the first apply");
        assert!(fake.object("jobs", ns, &job).is_some(), "the Job was created");
    });
    case.run_default(async |backend| {
        let plan = plan_of(backend, &case.repo.desired()).await;
        let action = plan.jobs.iter().find(|action| action.name == "seed").expect("seed");
        assert_eq!(action.change.kind(), ChangeKind::Run);
        assert!(action.notes.iter().any(|note| note.contains("in progress")), "{:?}", action.notes);
        let report = backend.apply(&plan, &secrets(), &support::kube_backend::NoProgress).await.expect("apply");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.job_runs.len(), 1);
        assert!(report.job_runs[0].succeeded());
    });
    let creates: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|request| request.is_write() && request.path.ends_with(&format!("jobs/{job}")))
        .collect();
    assert_eq!(creates.len(), 1, "the Job was written once: {creates:?}");
    assert_eq!(fake.pods(ns).len(), 1, "one pod ran");
    case.run_default(async |backend| {
        assert!(!plan_of(backend, &case.repo.desired()).await.has_changes());
    });
}

const NIGHTLY: &str = "kind: Job\nname: nightly\nimage: acme/web:1\ncommand: [/web, cleanup]\n\
                       env: { DB_PASSWORD: { secret: db-password }, API_TOKEN: literal-token-5e1 }\n\
                       schedule: \"0 30 3 * * 2-6\"\nconcurrency: replace\nstartingDeadline: 5m\n\
                       keep: { succeeded: 2, failed: 4 }\n";

#[test]
fn a_scheduled_job_is_a_cron_job_run_by_hand_from_its_template_and_deleted_with_its_file() {
    let case = KubeCase::new("cron", "timezone: Europe/Berlin\n");
    case.repo.write("jobs/nightly.yaml", NIGHTLY);
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(job_change(&plan, "nightly"), ChangeKind::Create);
        let cron = fake.object("cronjobs", ns, "nightly").expect("the CronJob");
        let spec = &cron["spec"];
        // Tuesday to Saturday in railyard's weekdays (1 is Sunday) are 2-6 there and 1-5 here (0 is Sunday).
        assert_eq!(spec["schedule"], "30 3 * * 1-5");
        assert_eq!(spec["timeZone"], "Europe/Berlin");
        assert_eq!(spec["concurrencyPolicy"], "Replace");
        assert_eq!(spec["startingDeadlineSeconds"], 300);
        assert_eq!(
            (spec["successfulJobsHistoryLimit"].clone(), spec["failedJobsHistoryLimit"].clone()),
            (json!(2), json!(4))
        );
        assert_eq!(spec.pointer("/jobTemplate/metadata/labels/railyard.dev~1job"), Some(&json!("nightly")));
        assert_eq!(spec.pointer("/jobTemplate/spec/template/spec/restartPolicy"), Some(&json!("Never")));
        assert!(fake.names("jobs", ns).is_empty(), "the cluster runs it on its schedule, not the apply");
        assert!(!cron.to_string().contains(SECRET_VALUE) && !cron.to_string().contains("literal-token-5e1"));
        let secret = fake.object("secrets", ns, &format!("{ns}-secrets")).expect("the Secret of the Job's values");
        assert!(secret.pointer("/data/ENV.nightly.API_TOKEN").is_some(), "{secret}");

        fake.clear_requests();
        let (again, _) = sync(backend, &desired).await;
        assert!(!again.has_changes(), "{:?}", again.summary);
        assert!(writes(&fake.requests()).is_empty());

        // `railyard run nightly`: a Job from the CronJob's template, owned by it.
        let who = JobTrigger::Manual { who: "ops".to_owned() };
        let run = backend.run_job(&desired.env, &desired.jobs["nightly"], &secrets(), who.clone()).await.expect("run");
        assert_eq!((run.outcome.clone(), run.trigger.clone()), (JobOutcome::Succeeded, who));
        let names = fake.names("jobs", ns);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("nightly-manual-"), "{names:?}");
        let manual = fake.object("jobs", ns, &names[0]).expect("the manual Job");
        assert_eq!(manual.pointer("/metadata/ownerReferences/0/kind"), Some(&json!("CronJob")));
        assert_eq!(manual.pointer("/metadata/annotations/cronjob.kubernetes.io~1instantiate"), Some(&json!("manual")));
        assert_eq!(
            manual.pointer("/spec/template/spec/containers/0/args"),
            cron.pointer("/spec/jobTemplate/spec/template/spec/containers/0/args")
        );
        assert_eq!(manual.pointer("/metadata/labels/railyard.dev~1job"), Some(&json!("nightly")));

        // Gone from git: its CronJob and its Jobs go.
        case.repo.remove("jobs/nightly.yaml");
        let plan = sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(job_change(&plan, "nightly"), ChangeKind::Delete);
        assert!(fake.names("cronjobs", ns).is_empty());
        assert!(fake.names("jobs", ns).is_empty());
        assert!(!plan_of(backend, &case.repo.desired()).await.has_changes());
    });
}

#[test]
fn a_forbidden_overlap_is_skipped_and_a_schedule_with_seconds_is_refused_with_the_fix() {
    let case = KubeCase::new("cron-forbid", "");
    case.repo.write(
        "jobs/slow.yaml",
        "kind: Job\nname: slow\nimage: acme/web:1\ncommand: [sleep, '2']\nschedule: \"0 * * * * *\"\n",
    );
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        let job = &desired.jobs["slow"];
        let manual = || JobTrigger::Manual { who: "ops".to_owned() };
        let secrets = secrets();
        let (first, second) = tokio::join!(backend.run_job(&desired.env, job, &secrets, manual()), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            backend.run_job(&desired.env, job, &secrets, manual()).await
        });
        assert_eq!(first.expect("first run").outcome, JobOutcome::Succeeded);
        let second = second.expect("second run");
        assert!(matches!(&second.outcome, JobOutcome::Skipped { reason } if reason.contains("forbid")), "{second:?}");

        case.repo.write("jobs/slow.yaml", "kind: Job\nname: slow\nimage: acme/web:1\nschedule: \"30 * * * * *\"\n");
        let (_, report) = sync(backend, &case.repo.desired()).await;
        let ActionResult::Failed { error } = result_of(&report, "slow") else { panic!("{report:?}") };
        assert!(error.contains("runs at second 30") && error.contains("`0 * * * * *`"), "{error}");
    });
}

#[test]
fn job_and_cron_job_manifests_pass_kubernetes_validate_strict() {
    let case = KubeCase::new("jobs-validate", "timezone: Europe/Berlin\n");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "volumes:\n  - { name: data, mount: /data }\n"));
    case.repo.write(
        "jobs/migrate.yaml",
        &format!("{MIGRATE}volumes: [{{ name: data, mount: /data }}, {{ name: scratch, mount: /tmp/s }}]\nresources: {{ cpus: \"0.5\", memory: 256Mi }}\ntimeout: 2m\n"),
    );
    case.repo.write("jobs/nightly.yaml", NIGHTLY);
    let desired = case.repo.desired();
    let manifests = mapping::manifests(&desired, &KubernetesSettings::default());
    let kinds: Vec<&str> = manifests.objects.iter().map(|object| object.kind()).collect();
    assert!(kinds.contains(&"Job") && kinds.contains(&"CronJob"), "{kinds:?}");
    assert!(manifests.refused_jobs.is_empty());
    let text = railyard::export::kubernetes_yaml(&desired, &KubernetesSettings::default());
    let file = case.repo.dir.path().join("manifests.yaml");
    std::fs::write(&file, &text).expect("write manifests");
    assert_valid_kubernetes(&file, "the Job and CronJob manifests");
    // And the fake API server, which validates as the real one, takes them.
    case.run(KubernetesBackendSettings::default(), async |backend| {
        sync_ok(backend, &desired).await;
    });
    let claims = case.fake.names("persistentvolumeclaims", case.ns());
    assert_eq!(claims, ["data", "scratch"], "a Job's own volume gets its claim");
}

const BROKEN: &str = "kind: Job\nname: broken\nimage: acme/web:1\ncommand: [sh, -c, 'echo cleaning; exit 4']\n\
                      env: { DB_PASSWORD: { secret: db-password }, DATABASE_URL: 'postgres://app:url-pass-77@db/app' }\n\
                      retries: 1\nschedule: \"0 0 4 * * *\"\n";

/// How many pod logs the fake served.
fn log_reads(case: &KubeCase) -> usize {
    case.fake.requests().iter().filter(|request| request.method == "GET" && request.path.ends_with("/log")).count()
}

fn key_of(run: &railyard::backend::JobRun) -> String {
    run.key.clone().expect("a run the cluster started has its key")
}

#[test]
fn cron_job_runs_come_back_once_with_their_key_exit_code_and_redacted_log_and_railyards_own_runs_never() {
    let case = KubeCase::new("cron-runs", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.repo.write("jobs/migrate.yaml", MIGRATE);
    case.repo.write("jobs/nightly.yaml", NIGHTLY);
    case.repo.write("jobs/broken.yaml", BROKEN);
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        let env = &desired.env;
        // The hook runs in the apply, and `railyard run nightly` makes a Job from the CronJob: railyard's own runs.
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(job_change(&plan, "migrate"), ChangeKind::Run);
        let who = JobTrigger::Manual { who: "ops".to_owned() };
        let manual = backend.run_job(env, &desired.jobs["nightly"], &secrets(), who).await.expect("run");
        assert!(manual.succeeded(), "{manual:?}");
        assert_eq!(fake.names("jobs", ns).len(), 2, "the hook's Job and the manual one");
        assert!(backend.finished_runs(env, &BTreeSet::new()).await.expect("finished runs").is_empty());

        // The CronJob controller starts a run of each on their schedule; both end.
        let lines: String = (1..=12).map(|n| format!("row {n}\n")).collect();
        fake.set_job_log("broken-", &format!("{lines}login {SECRET_VALUE} via url-pass-77\nerror: disk full\n"));
        fake.set_job_log("nightly-", "cleaned 42 rows\n");
        let nightly = fake.fire_cron_job(ns, "nightly").expect("the CronJob nightly");
        let broken = fake.fire_cron_job(ns, "broken").expect("the CronJob broken");
        fake.run_job_controller();
        fake.run_job_controller();
        let nightly_job = fake.object("jobs", ns, &nightly).expect("nightly's Job");
        let scheduled = nightly_job
            .pointer("/metadata/annotations/batch.kubernetes.io~1cronjob-scheduled-timestamp")
            .and_then(Value::as_str)
            .expect("the scheduled time");
        let scheduled_ms = humantime::parse_rfc3339(scheduled).expect("RFC 3339");
        let scheduled_ms = scheduled_ms.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis();

        fake.clear_requests();
        let runs = backend.finished_runs(env, &BTreeSet::new()).await.expect("finished runs");
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(log_reads(&case), 2, "one log read per new run");
        assert!(writes(&fake.requests()).is_empty(), "reading runs writes nothing: {:?}", fake.requests());
        let run_of = |job: &str| runs.iter().find(|run| run.job == job).unwrap_or_else(|| panic!("{job}: {runs:?}"));

        let ok = run_of("nightly");
        assert_eq!(ok.outcome, JobOutcome::Succeeded);
        assert_eq!(ok.trigger, JobTrigger::Schedule { at: i64::try_from(scheduled_ms).expect("fits") });
        assert_eq!(ok.key.as_deref(), nightly_job.pointer("/metadata/uid").and_then(Value::as_str));
        assert_eq!((ok.env.as_str(), ok.spec_hash.clone()), ("production", desired.jobs["nightly"].spec_hash()));
        assert_eq!((ok.tries, ok.output.as_str()), (1, "cleaned 42 rows\n"));
        assert!(ok.started_at > 0 && ok.finished_at >= ok.started_at, "{ok:?}");

        let failed = run_of("broken");
        let JobOutcome::Failed { exit_code, reason } = &failed.outcome else { panic!("{failed:?}") };
        assert_eq!(*exit_code, Some(4));
        assert!(reason.contains("backoff limit"), "{reason}");
        assert_eq!(failed.tries, 2, "retries: 1 is two pods");
        assert!(matches!(failed.trigger, JobTrigger::Schedule { .. }), "{failed:?}");
        assert_eq!(
            failed.key.as_deref(),
            fake.object("jobs", ns, &broken)
                .and_then(|job| job["metadata"]["uid"].as_str().map(str::to_owned))
                .as_deref()
        );
        let failure = failed.failure().expect("a failure");
        assert!(failure.contains("error: disk full") && failure.contains("row 12"), "{failure}");
        assert!(failure.contains("login <redacted> via <redacted>"), "{failure}");
        assert!(!failed.output.contains(SECRET_VALUE) && !failed.output.contains("url-pass-77"), "{}", failed.output);

        // Recorded: the same pass is one list of Jobs, with no log read.
        let known: BTreeSet<String> = runs.iter().map(key_of).collect();
        fake.clear_requests();
        assert!(backend.finished_runs(env, &known).await.expect("finished runs").is_empty());
        let requests = fake.requests();
        assert_eq!(requests.len(), 1, "a no-op pass is one list: {requests:?}");
        assert!(requests[0].path.ends_with("/jobs") && requests[0].query.contains("labelSelector"), "{requests:?}");

        // `kubectl create job --from=cronjob/nightly` by hand: the cluster's run too, timed by its creation.
        let cron_job = fake.object("cronjobs", ns, "nightly").expect("the CronJob");
        let cron_job: kube::api::DynamicObject = serde_json::from_value(cron_job).expect("a CronJob");
        let by_hand: k8s_openapi::api::batch::v1::Job =
            serde_json::from_value(job_from_cron_job(&cron_job, "nightly-by-hand")).expect("a Job");
        let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = kube::Api::namespaced(fake.client(), ns);
        let params = kube::api::PostParams { field_manager: Some("kubectl-create".to_owned()), ..Default::default() };
        jobs.create(&params, &by_hand).await.expect("kubectl create job");
        fake.run_job_controller();
        fake.run_job_controller();
        let runs = backend.finished_runs(env, &known).await.expect("finished runs");
        assert_eq!(runs.len(), 1, "{runs:?}");
        let created = fake.object("jobs", ns, "nightly-by-hand").expect("the Job");
        let created = humantime::parse_rfc3339(created["metadata"]["creationTimestamp"].as_str().expect("created"))
            .expect("RFC 3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        assert_eq!(runs[0].trigger, JobTrigger::Schedule { at: i64::try_from(created.as_millis()).expect("fits") });
    });
}

#[test]
fn a_backlog_of_cron_job_runs_is_read_oldest_first_a_bounded_number_per_call() {
    let case = KubeCase::new("cron-backlog", "");
    case.repo.write("jobs/nightly.yaml", "kind: Job\nname: nightly\nimage: acme/web:1\nschedule: \"0 0 3 * * *\"\n");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        for _ in 0..=MAX_FOUND_RUNS {
            fake.fire_cron_job(ns, "nightly").expect("the CronJob");
        }
        fake.run_job_controller();
        fake.run_job_controller();
        fake.clear_requests();
        let first = backend.finished_runs(&desired.env, &BTreeSet::new()).await.expect("finished runs");
        assert_eq!(first.len(), MAX_FOUND_RUNS);
        assert_eq!(log_reads(&case), MAX_FOUND_RUNS);
        assert!(first.windows(2).all(|pair| pair[0].finished_at <= pair[1].finished_at), "oldest first");
        let known: BTreeSet<String> = first.iter().map(key_of).collect();
        let rest = backend.finished_runs(&desired.env, &known).await.expect("finished runs");
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert!(!known.contains(&key_of(&rest[0])));
    });
}

#[test]
fn a_cron_job_run_killed_at_its_deadline_comes_back_timed_out() {
    let case = KubeCase::new("cron-deadline", "");
    case.repo.write(
        "jobs/slow.yaml",
        "kind: Job\nname: slow\nimage: acme/web:1\ncommand: [sleep, '30']\ntimeout: 1s\nschedule: \"0 0 3 * * *\"\n",
    );
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        fake.fire_cron_job(ns, "slow").expect("the CronJob");
        fake.run_job_controller();
        assert!(backend.finished_runs(&desired.env, &BTreeSet::new()).await.expect("runs").is_empty(), "still active");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let runs = backend.finished_runs(&desired.env, &BTreeSet::new()).await.expect("finished runs");
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].outcome, JobOutcome::TimedOut { seconds: 1 });
    });
}

#[test]
fn serve_records_the_runs_a_cron_job_started_in_its_history() {
    let case = KubeCase::new("cron-history", "");
    let repo = &case.repo;
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    repo.write("jobs/nightly.yaml", "kind: Job\nname: nightly\nimage: tools:1\nschedule: \"0 0 3 * * *\"\n");
    let dir = repo.dir.path();
    support::git(dir, &["init", "-q", "-b", "main"]);
    support::git(dir, &["add", "-A"]);
    support::git(dir, &["commit", "-q", "-m", "a nightly job"]);
    let kubeconfig = case.fake.kubeconfig_path();
    let args = ["--backend", "kubernetes", "--poll-interval", "1h", "--drift-interval", "1s", "--caddy-admin", "none"];
    let served = support::Served::start(
        &format!("file://{}", dir.display()),
        None,
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))],
    );
    let synced = support::eventually(Duration::from_secs(60), || {
        support::get_json(served.port, "/api/v1/environments/production")["syncStatus"] == "synced"
    });
    assert!(synced, "{}", served.log());
    case.fake.set_job_log("nightly", "cleaned 42 rows\n");
    case.fake.fire_cron_job(case.ns(), "nightly").expect("the CronJob");
    case.fake.run_job_controller();
    case.fake.run_job_controller();
    let runs = |served: &support::Served| {
        support::get_json(served.port, "/api/v1/environments/production/jobs")
            .as_array()
            .and_then(|jobs| jobs.iter().find(|job| job["name"] == "nightly"))
            .map(|job| job["runs"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    };
    let recorded = support::eventually(Duration::from_secs(30), || !runs(&served).is_empty());
    assert!(recorded, "the CronJob's run reached the history:\n{}", served.log());
    let first = runs(&served);
    assert_eq!(first[0]["state"], "succeeded", "{first:#?}");
    assert_eq!(first[0]["trigger"], "schedule", "{first:#?}");
    // Later reconciles see the same finished Job: it stays one run.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&served).len(), 1, "{:#?}", runs(&served));
    let metrics = support::http_get(served.port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    assert!(
        metrics.contains("railyard_job_runs_total{env=\"production\",job=\"nightly\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
}
