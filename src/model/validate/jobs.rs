//! The rules of `kind: Job`: a name of its own, one image, either a schedule or a run on change (as a hook or not),
//! hooks and dependencies that name existing apps, and no cycle through hooks and `dependsOn`.

use std::collections::{BTreeMap, BTreeSet};

use super::super::Diagnostic;
use super::super::kinds::{App, Job};
use super::super::load::Sourced;
use super::{
    check_app_named, check_cron, check_dns_label, check_duration, check_env, check_image_reference, check_resources,
    check_volumes,
};

/// The longest name of a scheduled Job: Kubernetes refuses a CronJob whose name leaves no room for the 11
/// characters its Jobs' names add.
const MAX_SCHEDULED_NAME: usize = 52;

/// Checks every Job and maps each name to its first document.
pub(super) fn check_jobs<'a>(
    jobs: &'a [Sourced<Job>],
    apps: &BTreeMap<String, &Sourced<App>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, &'a Sourced<Job>> {
    let by_name = super::unique_by_name(jobs, "Job", |job| &job.name, diagnostics);
    for job in jobs {
        check_job(job, apps, diagnostics);
    }
    check_hook_cycles(&by_name, apps, diagnostics);
    by_name
}

fn check_job(job: &Sourced<Job>, apps: &BTreeMap<String, &Sourced<App>>, diagnostics: &mut Vec<Diagnostic>) {
    let spec = &job.doc;
    check_dns_label(job, &spec.name, "Job name", diagnostics);
    if let Some(app) = apps.get(&spec.name.value) {
        diagnostics.push(job.error_at(
            &spec.name,
            format!(
                "Job `{}` has the name of the App at {}; a Job and an App share the environment's names: rename one",
                spec.name.value,
                app.place_of(&app.doc.name)
            ),
        ));
    }
    check_image(job, apps, diagnostics);
    check_env(job, &spec.env, diagnostics);
    if let Some(resources) = &spec.resources {
        check_resources(job, resources, diagnostics);
    }
    check_volumes(job, &spec.volumes, diagnostics);
    if let Some(timeout) = &spec.timeout {
        check_duration(job, timeout, diagnostics);
    }
    if let Some(retries) = spec.retries.as_ref().filter(|retries| retries.value > 10) {
        diagnostics
            .push(job.error_at(retries, format!("retries: {} is over the limit of 10; use 0-10", retries.value)));
    }
    if let Some(keep) = &spec.keep
        && keep.succeeded.into_iter().chain(keep.failed).any(|count| count > 100)
    {
        diagnostics.push(job.error_at(&spec.name, "keep: at most 100 runs per outcome; lower `succeeded` or `failed`"));
    }
    check_when(job, diagnostics);
    let hook = spec.hook.as_ref();
    let named = spec
        .depends_on
        .iter()
        .map(|app| ("dependsOn", app))
        .chain(hook.into_iter().flat_map(|hook| hook.before.iter().map(|app| ("hook.before", app))))
        .chain(hook.into_iter().flat_map(|hook| hook.after.iter().map(|app| ("hook.after", app))));
    for (field, app) in named {
        check_app_named(job, field, app, apps, diagnostics);
    }
    if let Some(hook) = hook {
        for app in hook.after.iter().filter(|after| hook.before.iter().any(|before| before.value == after.value)) {
            diagnostics
                .push(job.error_at(app, format!("hook names `{}` both before and after; keep one of them", app.value)));
        }
    }
    let refused = [
        ("ports", spec.ports.as_ref(), "a Job serves nothing; make it an App"),
        ("replicas", spec.replicas.as_ref(), "a Job runs once per trigger; make it an App, or give it a `schedule`"),
    ];
    for (field, value, why) in refused {
        if let Some(value) = value {
            diagnostics.push(job.error_at(value, format!("`{field}` is not a field of a Job: {why}")));
        }
    }
}

/// Exactly one of `image` and `imageFrom`, and `imageFrom` names an app.
fn check_image(job: &Sourced<Job>, apps: &BTreeMap<String, &Sourced<App>>, diagnostics: &mut Vec<Diagnostic>) {
    let spec = &job.doc;
    match (&spec.image, &spec.image_from) {
        (Some(image), None) => check_image_reference(job, image, diagnostics),
        (None, Some(from)) => check_app_named(job, "imageFrom", from, apps, diagnostics),
        (Some(_), Some(from)) => diagnostics.push(job.error_at(
            from,
            "a Job takes `image` or `imageFrom`, not both; remove one of them",
        )),
        (None, None) => diagnostics.push(job.error_at(
            &spec.name,
            format!(
                "Job `{}` has no image; add `image: <reference>` or `imageFrom: <app>` (the app's image at this commit)",
                spec.name.value
            ),
        )),
    }
}

/// A Job runs either on its schedule or on change (as a hook or not); the schedule's own fields need a schedule.
fn check_when(job: &Sourced<Job>, diagnostics: &mut Vec<Diagnostic>) {
    let spec = &job.doc;
    match &spec.schedule {
        Some(schedule) => {
            if let Err(message) = check_cron(&schedule.value) {
                diagnostics.push(job.error_at(schedule, message));
            }
            if spec.name.value.len() > MAX_SCHEDULED_NAME {
                diagnostics.push(job.error_at(
                    &spec.name,
                    format!(
                        "scheduled Job `{}` has {} characters; a scheduled Job's name may have at most \
                         {MAX_SCHEDULED_NAME} (on Kubernetes it names a CronJob, whose runs add 11): shorten it",
                        spec.name.value,
                        spec.name.value.len()
                    ),
                ));
            }
            if spec.hook.is_some() {
                diagnostics.push(job.error_at(
                    schedule,
                    "a Job runs either on a `schedule` or as a `hook` of apps' updates, not both; split it into two \
                     Jobs",
                ));
            }
            if let Some(deadline) = &spec.starting_deadline {
                check_duration(job, deadline, diagnostics);
            }
        }
        None => {
            if let Some(deadline) = &spec.starting_deadline {
                diagnostics.push(job.error_at(deadline, "startingDeadline applies to a scheduled Job; add `schedule`"));
            }
            if spec.concurrency.is_some() {
                diagnostics.push(job.error_at(
                    &spec.name,
                    "concurrency applies to a scheduled Job; add `schedule` or remove `concurrency`",
                ));
            }
        }
    }
}

/// One node of the graph of what must finish before what: an app's update or a Job's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node<'a> {
    App(&'a str),
    Job(&'a str),
}

/// A cycle through hooks and `dependsOn` (the migrate Job runs before `web`, and depends on `web`) could never
/// start; cycles of apps alone are reported by the apps' own check.
fn check_hook_cycles(
    jobs: &BTreeMap<String, &Sourced<Job>>,
    apps: &BTreeMap<String, &Sourced<App>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut edges: BTreeMap<Node, Vec<Node>> = BTreeMap::new();
    for (name, app) in apps {
        let dependencies = app.doc.depends_on.iter().map(|d| Node::App(d.value.as_str()));
        edges.entry(Node::App(name)).or_default().extend(dependencies);
    }
    for (name, job) in jobs {
        let spec = &job.doc;
        let hook = spec.hook.as_ref();
        let after = hook.into_iter().flat_map(|hook| &hook.after);
        let dependencies = spec.depends_on.iter().chain(after).map(|app| Node::App(app.value.as_str()));
        edges.entry(Node::Job(name)).or_default().extend(dependencies);
        for before in hook.into_iter().flat_map(|hook| &hook.before) {
            edges.entry(Node::App(&before.value)).or_default().push(Node::Job(name));
        }
    }
    let mut done: BTreeSet<Node> = BTreeSet::new();
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for start in jobs.keys().map(|name| Node::Job(name)) {
        let mut path = vec![start];
        if let Some(cycle) = find_cycle(start, &edges, &mut path, &mut done) {
            let Some(Node::Job(job)) = cycle.iter().find(|node| matches!(node, Node::Job(_))) else { continue };
            if !reported.insert(job) {
                continue;
            }
            let Some(doc) = jobs.get(*job) else { continue };
            let shown: Vec<String> = cycle
                .iter()
                .map(|node| match node {
                    Node::App(name) => format!("app `{name}`"),
                    Node::Job(name) => format!("job `{name}`"),
                })
                .collect();
            diagnostics.push(doc.error_at(
                &doc.doc.name,
                format!(
                    "hooks and dependsOn make a cycle: {}; each must finish before the next starts, so none could \
                     start: remove one of these hooks or dependencies",
                    shown.join(" waits for ")
                ),
            ));
        }
    }
}

/// The first cycle reachable from the end of `path`, as the nodes it passes.
fn find_cycle<'a>(
    node: Node<'a>,
    edges: &BTreeMap<Node<'a>, Vec<Node<'a>>>,
    path: &mut Vec<Node<'a>>,
    done: &mut BTreeSet<Node<'a>>,
) -> Option<Vec<Node<'a>>> {
    for next in edges.get(&node).into_iter().flatten() {
        if let Some(start) = path.iter().position(|step| step == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(*next);
            return Some(cycle);
        }
        if done.contains(next) {
            continue;
        }
        path.push(*next);
        let found = find_cycle(*next, edges, path, done);
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    done.insert(node);
    None
}
