//! The status pages, rendered on the server with maud (every value escaped): the environments, one environment with
//! its apps and pending diff, and the sync history. A few lines of plain JavaScript follow `/events` to refresh
//! the page in place; without JavaScript a reload shows the same.

use crate::outcome::SyncOutcome;
use std::time::{Duration, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::daemon::previews::{AgainstProduction, PreviewsView, is_preview};
use crate::daemon::{AppStatus, EnvState, Health, SyncStatus};
use crate::model::short_sha;
use crate::plan::{Action, Change, Plan};
use crate::previews::Standing;
use crate::scaling::history::{AppHistory, WINDOW_MS as HISTORY_WINDOW_MS};
use crate::source::CommitInfo;
use crate::store::{Page, SyncRecord};

const STYLE: &str = r#"
:root{--bg:#f7f8fa;--fg:#1d2330;--muted:#667085;--card:#fff;--line:#e4e7ec;--ok:#12805c;--warn:#b54708;--bad:#c4320a;--info:#175cd3;--add:#e6f4ea;--del:#fdecea;--addfg:#0b6b3a;--delfg:#a11b0c}
@media (prefers-color-scheme:dark){:root{--bg:#0f1217;--fg:#e6e8eb;--muted:#98a2b3;--card:#171b22;--line:#2a303b;--ok:#32d583;--warn:#fdb022;--bad:#f97066;--info:#84adff;--add:#0f2e1d;--del:#3a1512;--addfg:#6ce9a6;--delfg:#fda29b}}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;gap:1rem;align-items:center;padding:.8rem 1.2rem;border-bottom:1px solid var(--line);background:var(--card)}
header a{color:var(--fg);text-decoration:none;font-weight:700}header nav{margin-left:auto;color:var(--muted);font-size:.85rem}
main{max-width:1100px;margin:0 auto;padding:1.2rem}h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.6rem 0 .6rem}
a{color:var(--info)}.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem;margin-bottom:.8rem}
.envs{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fill,minmax(300px,1fr))}.env h3{margin:0 0 .4rem;font-size:1.05rem}
.muted{color:var(--muted)}.mono,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
.badge{display:inline-block;border-radius:999px;padding:.05rem .55rem;font-size:.78rem;font-weight:600;border:1px solid currentColor;margin-right:.3rem}
.synced,.healthy,.done,.succeeded{color:var(--ok)}.outOfSync,.degraded,.missing,.pending,.syncing,.interrupted,.pinned,.unknown-change{color:var(--warn)}.error,.failed,.invalid,.rolled-back,.timedOut{color:var(--bad)}.unknown,.skipped{color:var(--muted)}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden}
th,td{text-align:left;padding:.5rem .7rem;border-bottom:1px solid var(--line);vertical-align:top}th{font-size:.8rem;color:var(--muted);font-weight:600}
.dot{display:inline-block;width:.65rem;height:.65rem;border-radius:50%;margin-right:.2rem;background:var(--muted)}.dot.healthy{background:var(--ok)}.dot.unhealthy,.dot.failed{background:var(--bad)}.dot.starting{background:var(--warn)}
details{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:.6rem}summary{cursor:pointer;padding:.6rem .8rem;font-weight:600}
pre.diff{margin:0;padding:.6rem 0;overflow-x:auto;border-top:1px solid var(--line)}pre.diff span{display:block;padding:0 .8rem;white-space:pre}
.add{background:var(--add);color:var(--addfg)}.del{background:var(--del);color:var(--delfg)}.hunk{color:var(--info)}.meta{color:var(--muted)}
.problems{border-color:var(--bad)}.problems li{margin:.2rem 0}form.sync{display:flex;gap:.5rem;flex-wrap:wrap;margin:.5rem 0}
input,button{font:inherit;padding:.35rem .6rem;border-radius:8px;border:1px solid var(--line);background:var(--card);color:var(--fg)}button{cursor:pointer;font-weight:600}
.pager{display:flex;gap:1rem;margin-top:.8rem}pre.output{white-space:pre-wrap;overflow-wrap:anywhere;margin:0}@media (max-width:640px){th.wide,td.wide{display:none}main{padding:.7rem}}
"#;

/// Replaces `<main>` with the freshly rendered one whenever the daemon reports a change.
const LIVE: &str = r##"
if (window.EventSource) {
  const events = new EventSource("/events");
  let busy = false;
  events.onmessage = async () => {
    // Never wipe what someone is typing. The log form's filter keeps its value once submitted: it counts only while
    // focused, or no redraw would ever come again.
    const typing = [...document.querySelectorAll("main input")]
      .some(i => i === document.activeElement || (i.value && !i.closest("#log-form")));
    if (busy || typing) return; busy = true;
    try {
      // A redraw keeps a live log tail, so the page is then asked without it (no log read per change); a log view
      // that is not tailing (it showed an error) is drawn anew.
      const tail = document.getElementById("logs"), tailing = !!(tail && tail.dataset.tailing);
      const headers = tailing ? { "Accept": "text/html", "X-Railyard-Redraw": "1" } : { "Accept": "text/html" };
      const response = await fetch(location.href, { headers });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector("main"), open = [...document.querySelectorAll("details[open]")].map(d => d.id);
      // A live log tail keeps its lines and its stream: the fresh page's log section gives way to it.
      const slot = fresh && fresh.querySelector("#logs");
      if (tailing && slot) { slot.replaceWith(tail); fresh.querySelectorAll("script").forEach(s => s.remove()); }
      if (fresh) { document.querySelector("main").replaceWith(fresh); open.forEach(id => { const d = document.getElementById(id); if (d) d.open = true; }); }
      // Scripts of a parsed page do not run: a log view drawn anew starts its tail here.
      if (!tailing && window.railyardTail) window.railyardTail();
    } finally { busy = false; }
  };
}
"##;

pub(super) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · railyard" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "railyard" } nav { "environments · " a href="/audit" { "audit" } " · " a href="/metrics" { "metrics" } } }
                main { (body) }
                script { (PreEscaped(LIVE)) }
            }
        }
    }
}

pub(super) fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "badge " (class) } { (text) } }
}

fn sync_badge(status: SyncStatus) -> Markup {
    let (class, text) = match status {
        SyncStatus::Unknown => ("unknown", "unknown"),
        SyncStatus::Synced => ("synced", "synced"),
        SyncStatus::OutOfSync => ("outOfSync", "out of sync"),
        SyncStatus::Syncing => ("syncing", "syncing"),
        SyncStatus::Error => ("error", "error"),
        SyncStatus::RolledBack => ("rolled-back", "rolled back"),
        SyncStatus::Pinned => ("pinned", "pinned"),
    };
    badge(class, text)
}

fn health_badge(health: Health) -> Markup {
    let text = match health {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Missing => "missing",
        Health::Degraded => "degraded",
        Health::Failed => "failed",
    };
    badge(text, text)
}

/// "3 min ago", with the exact time on hover.
pub(super) fn when(ms: i64, now_ms: i64) -> Markup {
    let ago = Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0));
    let text = match ago.as_secs() {
        0..=59 => format!("{} s ago", ago.as_secs()),
        60..=3599 => format!("{} min ago", ago.as_secs() / 60),
        3600..=86_399 => format!("{} h ago", ago.as_secs() / 3600),
        seconds => format!("{} d ago", seconds / 86_400),
    };
    let exact = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    html! { time datetime=(humantime::format_rfc3339_seconds(exact).to_string()) title=(humantime::format_rfc3339_seconds(exact).to_string()) { (text) } }
}

fn commit_line(commit: Option<&CommitInfo>, now_ms: i64) -> Markup {
    html! {
        @if let Some(commit) = commit {
            span.commit { code { (short_sha(&commit.sha)) } " " span.message { (commit.summary) } }
            span.muted { " · " (commit.author) " · " (when(commit.time * 1000, now_ms)) }
        } @else {
            span.muted { "no commit yet" }
        }
    }
}

/// `/`: every environment at a glance, and the pull requests with their previews.
/// What the overview says of the replicas and the store: who leads and since when (with an election), and a store
/// that cannot be reached.
#[derive(Debug, Clone, Default)]
pub struct ReplicasView {
    pub leadership: Option<crate::leader::Leadership>,
    pub store_trouble: Option<String>,
}

pub fn overview(envs: &[EnvState], previews: &PreviewsView, replicas: &ReplicasView, now_ms: i64) -> Markup {
    layout(
        "Environments",
        html! {
            h1 { "Environments" }
            @if let Some(trouble) = &replicas.store_trouble { div.error id="store-trouble" { (trouble) } }
            @if let Some(leadership) = &replicas.leadership { (leader_line(leadership, now_ms)) }
            div.envs {
                @for env in envs.iter().filter(|env| !is_preview(&env.name)) {
                    div.card.env id={ "env-" (env.name) } {
                        h3 { a href={ "/env/" (env.name) } { (env.name) } " " (sync_badge(env.sync_status)) (health_badge(env.health)) }
                        div { (commit_line(env.commit.as_ref(), now_ms)) }
                        div.muted {
                            "branch " (env.branch) " · " (env.apps.len()) " apps · on " (env.target) " · " (env.source)
                            @if let Some(ms) = env.last_sync_ms {
                                " · synced " (when(ms, now_ms))
                                @if let Some(duration) = env.last_sync_duration_ms { " in " (format!("{:.1}", duration as f64 / 1000.0)) " s" }
                            }
                        }
                        @if let Some(pin) = &env.pinned {
                            div.pinned.pin {
                                "Pinned to " code { (short_sha(&pin.commit)) } " by rollback, auto-sync paused"
                                @if let Some(head) = &pin.head { "; the branch is at " code { (short_sha(&head.sha)) } ", not applied" }
                            }
                        }
                        @if env.pending_destroy { div.error.pending-destroy { "Removed from the Project's list: destroy pending (sync to destroy)" } }
                        @if !env.conflicts.is_empty() { div.error { (env.conflicts.len()) " host(s) claimed by another environment" } }
                        @if let Some(error) = &env.error { div.error { (error) } }
                    }
                }
            }
            @if previews.enabled || !previews.entries.is_empty() { (pull_requests(envs, previews)) }
        },
    )
}

/// Who leads and since when, and whether this replica does.
fn leader_line(leadership: &crate::leader::Leadership, now_ms: i64) -> Markup {
    html! {
        div.muted id="leader" {
            @match &leadership.leader {
                Some(leader) if leadership.leading => { "This replica (" code { (leader) } ") leads" }
                Some(leader) => { code { (leader) } " leads; this replica (" code { (leadership.identity) } ") follows" }
                None => { "No replica leads yet; this one is " code { (leadership.identity) } }
            }
            @if let (Some(_), Some(since)) = (&leadership.leader, leadership.since_ms) { " · since " (when(since, now_ms)) }
            " · term " (leadership.term) " · " (leadership.lock)
            @if let Some(error) = &leadership.error { span.error { " · " (error) } }
        }
    }
}

/// The "pull requests" section: each open pull request (and preview branch) with its preview's state and URLs.
fn pull_requests(envs: &[EnvState], previews: &PreviewsView) -> Markup {
    html! {
        h2 { "Pull requests" }
        @if !previews.forge {
            p.muted id="no-forge" { "No forge access: closed pull requests are noticed only by their close event. Give railyard --forge, --forge-repo and a token to read the forge's list." }
        }
        @if let Some(error) = &previews.list_error {
            div.error id="forge-error" { "The forge's list of open pull requests cannot be read; no preview is torn down until it can: " (error) }
        }
        @if previews.entries.is_empty() { p.muted { "No open pull request." } }
        table.previews {
            @for entry in &previews.entries {
                @let running = envs.iter().find(|env| env.name == entry.env);
                tr id={ "preview-" (entry.env) } {
                    td { a href={ "/env/" (entry.env) } { (entry.env) } }
                    td {
                        @if let Some(pr) = &entry.pull_request { "#" (pr.number) " " (pr.title) span.muted { " by " (pr.author) } }
                        @if let Some(branch) = &entry.branch { "branch " code { (branch) } }
                    }
                    td.standing {
                        @match &entry.standing {
                            Standing::Running => { @if let Some(env) = running { (sync_badge(env.sync_status)) (health_badge(env.health)) } @else { (badge("syncing", "starting")) } }
                            Standing::Queued { position } => (badge("outOfSync", &format!("queued #{position}"))),
                            Standing::Refused { reason } => { (badge("error", "no preview")) " " span.muted { (reason) } },
                            Standing::Expired => (badge("unknown", "expired: push to bring it back")),
                        }
                    }
                    td { @for url in running.iter().flat_map(|env| env.apps.iter()).flat_map(|app| app.domain_urls.iter()) { a href=(url) { (url) } " " } }
                }
            }
        }
    }
}

/// A pull request's plan against production, on its preview's page.
fn against_production(against: &AgainstProduction) -> Markup {
    html! {
        h2 { "Plan against production" }
        div.card id="against-production" {
            div.muted { "What merging " code { (short_sha(&against.head_sha)) } " would change in production: " strong { (against.summary()) } }
            @if let Some(plan) = &against.plan { @if plan.has_changes() { (plan_view(plan)) } }
            @if let Some(error) = &against.error { div.error { (error) } }
        }
    }
}

/// `/env/{env}`: apps, the pending plan, validation errors, "Sync now".
pub fn environment(
    env: &EnvState,
    can_sync: bool,
    jobs: &super::jobs::JobsSection,
    images: Option<crate::builder::docker::ImageUsage>,
    now_ms: i64,
) -> Markup {
    layout(
        &env.name,
        html! {
            h1 { (env.name) " " (sync_badge(env.sync_status)) (health_badge(env.health)) }
            div.card {
                div { "Commit: " (commit_line(env.commit.as_ref(), now_ms)) }
                div.muted { "Source: " (env.source) " · branch " (env.branch) " · project " (env.project.as_deref().unwrap_or("-")) " · runs on " (env.target) " · sync policy " (format!("{:?}", env.sync_policy).to_lowercase()) }
                @if let Some(ms) = env.last_sync_ms { div.muted { "Last sync " (when(ms, now_ms)) } }
                a href={ "/env/" (env.name) "/syncs" } { "History" }
                @if can_sync {
                    form.sync method="post" action={ "/env/" (env.name) "/sync" } {
                        input type="password" name="token" placeholder="API token" autocomplete="current-password" required;
                        button type="submit" id="sync-now" { "Sync now" }
                    }
                }
            }
            @if let Some(pin) = &env.pinned {
                div.card.problems id="pinned" {
                    strong { "Pinned to " code { (short_sha(&pin.commit)) } " by rollback, auto-sync paused." }
                    @if let Some(head) = &pin.head {
                        div.muted { "The branch is at " code { (short_sha(&head.sha)) } " " (head.summary) ", not applied" @if let Some(plan) = &pin.head_plan { ": " (plan) } "." }
                    }
                    @if can_sync {
                        form.sync method="post" action={ "/env/" (env.name) "/unpin" } {
                            input type="password" name="token" placeholder="API token" autocomplete="current-password" required;
                            button type="submit" id="unpin" { "Unpin: follow the branch again" }
                        }
                    }
                }
            }
            @if let Some(window) = &env.sync_window {
                div.card id="sync-window" {
                    strong { "Sync windows: " }
                    @if window.auto_sync_allowed { "automatic syncs may run" } @else { "automatic syncs wait" }
                    @if !window.active.is_empty() { " · active: " (window.active.join(", ")) }
                    @if let Some(at) = window.next_sync_allowed { " · next sync allowed at " (at.format("%Y-%m-%d %H:%M:%S UTC")) }
                    @if let Some(waiting) = &env.waiting_for_window { div.muted { (waiting) } }
                }
            }
            @if env.pending_destroy {
                div.card.problems id="pending-destroy" {
                    strong { "Destroy environment pending: " }
                    "it was removed from the Project's environments; the sync policy is manual, so its apps, network and \
                     routes go when someone syncs it (volumes stay unless deleteWithApp)."
                }
            }
            @if !env.conflicts.is_empty() {
                div.card.problems id="conflicts" {
                    strong { "Host conflicts" }
                    ul {
                        @for conflict in &env.conflicts {
                            li { (conflict.host) " is routed by environment " a href={ "/env/" (conflict.claimed_by) } { (conflict.claimed_by) } ", listed first; not here." }
                        }
                    }
                }
            }
            @if let Some(error) = &env.error {
                div.card.problems id="error" {
                    strong { "Error: " } (error)
                    @if !env.diagnostics.is_empty() {
                        ul.mono { @for problem in &env.diagnostics { li { (problem.to_string()) } } }
                    }
                }
            }
            h2 { "Apps" }
            (apps_table(&env.name, &env.apps))
            (super::jobs::section(&env.name, jobs, now_ms))
            (builds_section(&env.builds, images))
            h2 { "Pending changes" }
            @match &env.plan {
                Some(plan) if plan.has_changes() || plan.has_unknowns() => (plan_view(plan)),
                Some(_) => p.muted id="in-sync" { (nothing_to_change(env)) },
                None => p.muted { "Not planned yet." },
            }
            @if let Some(plan) = &env.plan { (plan_notices(plan)) }
            @if let Some(against) = &env.against_production { (against_production(against)) }
        },
    )
}

/// The image builds of the newest apply with their output (the build's own text, escaped like everything else), and
/// what railyard's built images take on the host.
fn builds_section(
    builds: &[crate::daemon::env::BuildView],
    images: Option<crate::builder::docker::ImageUsage>,
) -> Markup {
    html! {
        @if !builds.is_empty() || images.is_some_and(|usage| usage.images > 0) {
            h2 { "Builds" }
            @if let Some(usage) = images {
                p.muted id="built-images" { "Images railyard built on this host: " (usage.images) ", " (format!("{:.1}", usage.bytes as f64 / 1e6)) " MB (unreferenced ones go after --keep-images)." }
            }
            @for build in builds {
                div.card.build id={ "build-" (build.app) } {
                    div { strong { (build.app) } " " span class=(build.status) { (build.status) } " " code.muted { (build.image) } }
                    pre.mono.build-output { @for line in &build.output { (line) "\n" } }
                }
            }
        }
    }
}

/// What "no pending change" means for `env`: what runs matches git's newest commit, or only the commit a rollback
/// pinned, or only the last good commit when the newest is invalid.
fn nothing_to_change(env: &EnvState) -> Markup {
    let running = env.commit.as_ref().map(|commit| short_sha(&commit.sha)).unwrap_or_default();
    html! {
        @if let Some(pin) = &env.pinned {
            "Nothing to change against the pinned commit " code { (short_sha(&pin.commit)) } "; "
            @if let Some(head) = &pin.head { "the branch's newer commit " code { (short_sha(&head.sha)) } " waits until unpinned." }
            @else { "auto-sync waits until unpinned." }
        } @else if let Some(invalid) = &env.invalid_commit {
            "Nothing to change against the last good commit " code { (running) } "; the newest commit "
            code { (short_sha(&invalid.sha)) } " is invalid and is not applied."
        } @else {
            "Nothing to change: what runs matches git."
        }
    }
}

/// One app: its replicas and CPU over the last 24 hours as a chart, with its scale changes and schedule
/// boundaries marked, and what its ScalingRule holds now.
pub fn app(env: &EnvState, app: &AppStatus, history: Option<&AppHistory>, logs: Markup, now_ms: i64) -> Markup {
    let empty = AppHistory::default();
    let history = history.unwrap_or(&empty);
    layout(
        &format!("{} · {}", app.name, env.name),
        html! {
            h1 { a href={ "/env/" (env.name) } { (env.name) } " / " (app.name) " " (health_badge(app.health)) }
            div.card {
                div { "Replicas: " (app.ready) " ready of " (app.desired) }
                @if let Some(scaling) = &app.scaling { (scaling_note(scaling)) }
            }
            h2 { "The last 24 hours" }
            (load_chart(history, app.scaling.as_ref(), now_ms))
            p.muted {
                span.legend-replicas { "━ replicas" } " · " span.legend-cpu { "━ CPU, % of what the app asks for" }
                " · " span.legend-event { "┃ scale change" } " · " span.legend-boundary { "┆ schedule boundary" }
            }
            @if !history.events.is_empty() {
                h2 { "Scale changes" }
                table id="scale-events" {
                    thead { tr { th { "When" } th { "From" } th { "To" } th { "Trigger" } } }
                    tbody {
                        @for event in history.events.iter().rev() {
                            tr { td { (when(event.at_ms, now_ms)) } td { (event.from) } td { (event.to) } td { (event.trigger) } }
                        }
                    }
                }
            }
            (logs)
        },
    )
}

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 200.0;

/// The chart as server-rendered SVG: time runs over the last day, replicas (left scale) as steps, CPU (right
/// scale) as a line; scale changes and schedule boundaries as vertical marks with their details on hover.
fn load_chart(history: &AppHistory, scaling: Option<&crate::scaling::AppScaling>, now_ms: i64) -> Markup {
    let start = now_ms - HISTORY_WINDOW_MS;
    let x = |at_ms: i64| ((at_ms - start).max(0) as f64 / HISTORY_WINDOW_MS as f64 * CHART_WIDTH).min(CHART_WIDTH);
    let most_replicas =
        history.points.iter().map(|p| p.replicas).chain(scaling.map(|s| s.bounds.max)).max().unwrap_or(1);
    let replica_scale = f64::from(most_replicas.max(1) + 1);
    let most_cpu = history.points.iter().filter_map(|p| p.cpu_percent).fold(100.0_f64, f64::max);
    let y_replicas = |replicas: u32| CHART_HEIGHT - f64::from(replicas) / replica_scale * CHART_HEIGHT;
    let y_cpu = |cpu: f64| CHART_HEIGHT - cpu / (most_cpu * 1.1) * CHART_HEIGHT;
    let mut steps = Vec::new();
    for (index, point) in history.points.iter().enumerate() {
        if let Some(previous) = index.checked_sub(1).and_then(|i| history.points.get(i)) {
            steps.push(format!("{:.1},{:.1}", x(point.at_ms), y_replicas(previous.replicas)));
        }
        steps.push(format!("{:.1},{:.1}", x(point.at_ms), y_replicas(point.replicas)));
    }
    if let Some(last) = history.points.back() {
        steps.push(format!("{:.1},{:.1}", x(now_ms), y_replicas(last.replicas)));
    }
    let cpu: Vec<String> = history
        .points
        .iter()
        .filter_map(|p| p.cpu_percent.map(|cpu| format!("{:.1},{:.1}", x(p.at_ms), y_cpu(cpu))))
        .collect();
    let boundaries = scaling.map(|s| s.recent_boundaries.as_slice()).unwrap_or_default();
    html! {
        svg id="load-chart" xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) }
            width="100%" role="img" aria-label="replicas and CPU over the last 24 hours" {
            rect x="0" y="0" width=(CHART_WIDTH) height=(CHART_HEIGHT) fill="none" stroke="#ccc" {}
            @for boundary in boundaries {
                line.boundary x1=(format!("{:.1}", x(boundary.timestamp_millis()))) x2=(format!("{:.1}", x(boundary.timestamp_millis())))
                    y1="0" y2=(CHART_HEIGHT) stroke="#36c" stroke-dasharray="4 3" {
                    title { "schedule boundary " (boundary.format("%Y-%m-%d %H:%M UTC")) }
                }
            }
            @for event in &history.events {
                line.scale-event x1=(format!("{:.1}", x(event.at_ms))) x2=(format!("{:.1}", x(event.at_ms)))
                    y1="0" y2=(CHART_HEIGHT) stroke="#c33" {
                    title { (event.from) " → " (event.to) " (" (event.trigger) ")" }
                }
            }
            @if !cpu.is_empty() {
                polyline.cpu points=(cpu.join(" ")) fill="none" stroke="#e90" stroke-width="1.5" {}
            }
            @if !steps.is_empty() {
                polyline.replicas points=(steps.join(" ")) fill="none" stroke="#2a2" stroke-width="2" {}
            }
            text x="4" y="14" font-size="11" { (most_replicas + 1) " replicas" }
            text x=(CHART_WIDTH - 4.0) y="14" font-size="11" text-anchor="end" { (format!("{:.0}", most_cpu * 1.1)) "% CPU" }
        }
    }
}

/// The bounds in force, what set them and the next change, under an app's replica count.
fn scaling_note(scaling: &crate::scaling::AppScaling) -> Markup {
    let bounds = |b: &crate::scaling::Bounds| format!("{}–{}", b.min, b.max);
    html! {
        div.muted.scaling {
            "bounds " (bounds(&scaling.bounds))
            @if let Some(cron) = &scaling.set_by { " (schedule " span.mono { (cron) } ")" }
            @if let Some(next) = &scaling.next {
                br;
                "next " time datetime=(next.at.to_rfc3339()) { (next.at.format("%Y-%m-%d %H:%M UTC")) }
                " → " (bounds(&next.bounds))
            }
        }
    }
}

fn apps_table(env_name: &str, apps: &[AppStatus]) -> Markup {
    html! {
        table id="apps" {
            thead { tr { th { "App" } th { "Replicas" } th { "Health" } th.wide { "Image" } th.wide { "Ports" } th.wide { "Domains" } th.wide { "Commit" } } }
            tbody {
                @for app in apps {
                    tr id={ "app-" (app.name) } {
                        td { strong { a href={ "/env/" (env_name) "/apps/" (app.name) } { (app.name) } } }
                        td.replicas {
                            (app.ready) "/" (app.desired)
                            @if let Some(scaling) = &app.scaling { (scaling_note(scaling)) }
                        }
                        td {
                            (health_badge(app.health))
                            @for replica in &app.replicas {
                                span class={ "dot " (format!("{:?}", replica.health).to_lowercase()) } title={ (replica.id) ": " (replica.state.as_str()) } {}
                            }
                        }
                        td.wide.mono { (app.image) }
                        td.wide.mono.ports {
                            @for port in &app.ports {
                                @let published: Vec<_> = app.addresses.iter().filter(|a| a.container_port == *port).collect();
                                @if published.is_empty() {
                                    div { (port) }
                                } @else {
                                    @for address in published {
                                        div { a href={ "http://" (address.address) } { (address.address) } " → " (port) }
                                    }
                                }
                            }
                        }
                        td.wide.domains {
                            @for (index, (host, tls)) in app.domains.iter().enumerate() {
                                @let scheme = if *tls == crate::model::kinds::TlsMode::Off { "http" } else { "https" };
                                @let url = app.domain_urls.get(index).cloned().unwrap_or_else(|| format!("{scheme}://{host}"));
                                a href=(url) { (host) } " " span.muted { "TLS " (format!("{tls:?}").to_lowercase()) } " "
                            }
                        }
                        td.wide.mono { (app.commit.as_deref().map(short_sha).unwrap_or("-")) }
                    }
                }
            }
        }
    }
}

fn plan_view(plan: &Plan) -> Markup {
    html! {
        @if let Some(moving) = &plan.moving { p id="moving" { strong { (moving.to_string()) } } }
        p.muted id="plan-summary" { (plan.summary.to_string()) }
        @for action in &plan.apps { (action_view("App", action)) }
        @for action in &plan.domains { (action_view("Domain", action)) }
        @for action in &plan.jobs { (action_view("Job", action)) }
    }
}

/// What the plan says that is not a change: warnings, and projects left behind under an old name.
fn plan_notices(plan: &Plan) -> Markup {
    html! {
        @if !plan.warnings.is_empty() {
            div.card id="warnings" {
                strong { "Warnings" }
                ul { @for warning in &plan.warnings { li { (warning) } } }
            }
        }
        @if !plan.orphans.is_empty() {
            div.card.problems id="orphans" {
                strong { "Orphaned projects" }
                ul {
                    @for orphan in &plan.orphans {
                        li {
                            "Project " code { (orphan.project) } " (" (orphan.replicas.len()) " replica(s)) was applied \
                             from this repository under its old project name; railyard leaves it running. Remove it \
                             with " code { (orphan.remove_with) }
                        }
                    }
                }
            }
        }
    }
}

fn action_view<S>(kind: &str, action: &Action<S>) -> Markup {
    let detail = match &action.change {
        Change::Update { fields } => fields.join(", "),
        Change::Scale { from, to } => format!("{from} → {to} replicas"),
        Change::Repair { reasons } => reasons.join("; "),
        Change::Unknown { reason } => reason.clone(),
        _ => String::new(),
    };
    html! {
        @if action.change != Change::Unchanged {
            details id={ "change-" (kind) "-" (action.name) } open {
                summary { (badge(action.change.verb(), action.change.verb())) (kind) " " (action.name) " " span.muted { (detail) } }
                @for note in &action.notes { p.note { "Note: " (note) } }
                @if let Some(diff) = &action.diff { (diff_view(diff)) }
            }
        }
    }
}

/// A unified diff with added, removed and hunk lines marked.
pub fn diff_view(diff: &str) -> Markup {
    html! {
        pre.diff {
            @for line in diff.lines() {
                @let class = if line.starts_with("+++") || line.starts_with("---") { "meta" } else if line.starts_with('+') { "add" } else if line.starts_with('-') { "del" } else if line.starts_with("@@") { "hunk" } else { "ctx" };
                span class=(class) { (line) }
            }
        }
    }
}

fn outcome_badge(outcome: SyncOutcome) -> Markup {
    badge(outcome.as_str(), outcome.as_str())
}

/// `/env/{env}/syncs`: paged history.
pub fn history(env: &str, page: &Page<SyncRecord>, can_roll_back: bool, now_ms: i64) -> Markup {
    layout(
        &format!("{env} history"),
        html! {
            h1 { a href={ "/env/" (env) } { (env) } " · history" }
            table id="history" {
                thead { tr { th { "When" } th { "Outcome" } th { "Trigger" } th { "Commit" } th.wide { "Duration" } th.wide { "Changes" } } }
                tbody {
                    @for sync in &page.items {
                        tr.sync {
                            td { a href={ "/syncs/" (sync.id) } { (when(sync.started_ms, now_ms)) } }
                            td { (outcome_badge(sync.outcome)) }
                            td { (sync.trigger) }
                            td {
                                code { (sync.commit_sha.as_deref().map(short_sha).unwrap_or("-")) } " " (sync.commit_summary.as_deref().unwrap_or(""))
                                @if let (Some(sha), true) = (&sync.commit_sha, can_roll_back && sync.outcome == SyncOutcome::Synced) {
                                    " " a.rollback href={ "/env/" (env) "/rollback/" (sha) } { "Roll back…" }
                                }
                            }
                            td.wide { (format!("{:.1}", (sync.finished_ms - sync.started_ms) as f64 / 1000.0)) " s" }
                            td.wide.muted {
                                (sync.summary)
                                @if let Some(error) = &sync.error {
                                    @let first: String = error.lines().next().unwrap_or_default().chars().take(160).collect();
                                    div.error { (first) }
                                }
                            }
                        }
                    }
                }
            }
            @if page.items.is_empty() { p.muted { "No syncs yet." } }
            div.pager {
                @if page.page > 0 { a href={ "?page=" (page.page - 1) } { "← newer" } }
                @if page.has_more { a href={ "?page=" (page.page + 1) } { "older →" } }
            }
        },
    )
}

/// `/env/{env}/rollback/{commit}`: the plan back to a commit, and the button that applies it and pins the environment.
pub fn rollback(env: &str, commit: &str, plan: Result<&Plan, String>) -> Markup {
    layout(
        &format!("{env} · roll back"),
        html! {
            h1 { a href={ "/env/" (env) } { (env) } " · roll back to " code { (short_sha(commit)) } }
            @match plan {
                Ok(plan) => {
                    p { "Rolling back applies this plan, pins the environment to this commit and pauses auto-sync until it is unpinned." }
                    @if plan.has_changes() { (plan_view(plan)) }
                    form.sync method="post" action={ "/env/" (env) "/rollback" } {
                        input type="hidden" name="commit" value=(commit);
                        input type="password" name="token" placeholder="API token" autocomplete="current-password" required;
                        button type="submit" id="confirm-rollback" { "Roll back and pause auto-sync" }
                    }
                }
                Err(error) => div.card.problems { (error) },
            }
        },
    )
}

/// `/syncs/{id}`: one sync and the diff it applied.
pub fn sync_detail(sync: &SyncRecord, now_ms: i64) -> Markup {
    layout(
        &format!("Sync {}", sync.id),
        html! {
            h1 { "Sync " (sync.id) " " (outcome_badge(sync.outcome)) }
            div.card {
                div { "Environment: " a href={ "/env/" (sync.env) } { (sync.env) } }
                div { "Commit: " code { (sync.commit_sha.as_deref().unwrap_or("-")) } " " (sync.commit_summary.as_deref().unwrap_or("")) }
                div { "Trigger: " (sync.trigger) " · started " (when(sync.started_ms, now_ms)) " · took " (format!("{:.1}", (sync.finished_ms - sync.started_ms) as f64 / 1000.0)) " s" }
                div.muted { (sync.summary) }
            }
            @if let Some(error) = &sync.error { div.card.problems { pre.mono { (error) } } }
            @if !sync.diff.is_empty() { details id="diff" open { summary { "Diff applied" } (diff_view(&sync.diff)) } }
            @if !sync.build_output.is_empty() { details id="build-output" { summary { "Build output" } pre.mono { (sync.build_output) } } }
        },
    )
}

/// A page for a missing environment or sync.
pub fn not_found(what: &str) -> Markup {
    layout("Not found", html! { h1 { "Not found" } p { (what) } p { a href="/" { "All environments" } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Environment, OrphanProject};
    use crate::plan::Summary;

    fn env_with(plan: Plan) -> EnvState {
        EnvState {
            name: "production".to_owned(),
            branch: "main".to_owned(),
            backend: crate::backend::BackendKind::Docker,
            target: "docker".to_owned(),
            conflicts: Vec::new(),
            pending_destroy: false,
            against_production: None,
            sync_window: None,
            waiting_for_window: None,
            pinned: None,
            builds: Vec::new(),
            project: Some("shop".to_owned()),
            source: "/srv/config".to_owned(),
            sync_policy: crate::model::kinds::SyncPolicy::Auto,
            commit: None,
            sync_status: crate::daemon::SyncStatus::Synced,
            health: crate::daemon::Health::Healthy,
            last_sync_ms: None,
            last_sync_duration_ms: None,
            last_checked_ms: None,
            error: None,
            diagnostics: Vec::new(),
            invalid_commit: None,
            plan: Some(plan),
            apps: Vec::new(),
        }
    }

    #[test]
    fn warnings_orphans_and_notes_are_shown_even_when_nothing_changes() {
        let plan = Plan {
            jobs: Vec::new(),
            builds: Vec::new(),
            env: Environment::production("shop"),
            commit: None,
            apps: vec![Action {
                name: "web".to_owned(),
                change: Change::Update { fields: vec!["image".to_owned()] },
                desired: None,
                diff: None,
                notes: vec!["stop-first: brief downtime".to_owned()],
            }],
            domains: Vec::new(),
            proxy_error: None,
            warnings: vec!["secret `db-password` is not set".to_owned()],
            orphans: vec![OrphanProject {
                project: "old-shop".to_owned(),
                replicas: vec!["old-shop-web-1".to_owned()],
                remove_with: "docker compose -p old-shop down".to_owned(),
            }],
            summary: Summary::default(),
            platform: Default::default(),
            moving: None,
        };
        let page = environment(&env_with(plan.clone()), false, &Default::default(), None, 0).into_string();
        assert!(page.contains("secret `db-password` is not set"), "{page}");
        assert!(page.contains("old-shop") && page.contains("docker compose -p old-shop down"), "{page}");
        let pending = Plan { summary: Summary { update: 1, ..Summary::default() }, ..plan };
        let page = environment(&env_with(pending), false, &Default::default(), None, 0).into_string();
        assert!(page.contains("Note: stop-first: brief downtime"), "{page}");
    }
}
