//! The previews worker: keeps the preview environments in line with the open pull requests and the branches that
//! `previews.branches` names. Forge events are hints that wake it; with forge access the source of truth is the
//! forge's list of open pull requests, read on every event and every `previews.resync`. A list that could not be
//! read in full changes nothing (fail closed). Without forge access, open and close events alone drive it.
//! [`crate::previews::decide`] says what runs; this module starts, updates and tears down the environments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};

use super::trigger::Trigger;
use super::{Daemon, now_ms, read, write};
use crate::model::ListedEnvironment;
use crate::previews::{
    Candidate, PreviewPolicy, PullRequest, PullRequestReport, Standing, approval, awaiting_approval, branch_previewed,
    decide,
};
use crate::source::git::review_ref;

pub use crate::previews::PullRequestAction;

/// The previews as pages and the API show them.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewsView {
    pub enabled: bool,
    /// Whether the forge's list of open pull requests is read (else only events are heard).
    pub forge: bool,
    /// Why the last read of the forge's list failed, while it fails.
    pub list_error: Option<String>,
    /// When the forge's list was last read in full.
    pub listed_ms: Option<i64>,
    pub entries: Vec<PreviewEntry>,
}

/// One pull request or preview branch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewEntry {
    pub env: String,
    pub pull_request: Option<PullRequest>,
    pub branch: Option<String>,
    #[serde(flatten)]
    pub standing: Standing,
}

/// The previews worker's memory.
#[derive(Debug, Default)]
pub(super) struct PreviewsState {
    /// Open pull requests by number.
    open: BTreeMap<u64, PullRequest>,
    /// Preview branches: branch to (commit, when it was first seen at that commit).
    branches: BTreeMap<String, (String, i64)>,
    list_error: Option<String>,
    listed_ms: Option<i64>,
    view: Vec<PreviewEntry>,
    enabled: bool,
    /// What was last reported to the forge per pull request, so that each change is reported once.
    reported: BTreeMap<u64, String>,
    /// Preview hosts granted an ACME certificate, and when (see [`crate::model::preview::ration_certificates`]).
    certificates: BTreeMap<String, i64>,
}

/// Preview hosts remembered as granted a certificate; beyond that the oldest are forgotten.
const REMEMBERED_CERTIFICATES: usize = 10_000;

pub use crate::model::preview::is_preview_name as is_preview;

impl Daemon {
    /// A pull-request event from a forge webhook (signature already checked). Returns the preview's environment
    /// name. With forge access the event only wakes the worker, which reads the forge's list.
    pub(super) async fn pull_request_here(&self, action: PullRequestAction, pr: PullRequest) -> String {
        let env = format!("pr-{}", pr.number);
        let labels = self.preview_labels();
        {
            let mut state = write(&self.previews);
            match action {
                // With forge access a close is only a hint: the forge's list decides, and a list that cannot be
                // read keeps the preview.
                PullRequestAction::Closed if self.forge.is_some() => {}
                PullRequestAction::Closed => {
                    state.open.remove(&pr.number);
                }
                _ => {
                    let known = state.open.get(&pr.number);
                    let pushed_ms = match known {
                        Some(known) if known.head_sha == pr.head_sha => known.pushed_ms,
                        _ => pr.pushed_ms,
                    };
                    let approved_sha = approval(&labels, known, &pr, action == PullRequestAction::Labeled);
                    // The forge's word on the author stays until its list says otherwise (events may not carry it).
                    let author_trusted = pr.author_trusted || known.is_some_and(|known| known.author_trusted);
                    state.open.insert(pr.number, PullRequest { pushed_ms, approved_sha, author_trusted, ..pr });
                }
            }
        }
        self.remember_pull_requests().await;
        if let Some(handle) = self.env(&env)
            && action == PullRequestAction::Updated
        {
            handle.trigger.fire(Trigger::Webhook);
        }
        self.previews_trigger.fire(Trigger::Webhook);
        env
    }

    /// Serves a preview's `tls: auto` hosts with the internal CA once previews ordered
    /// `previews.certificatesPerHour` ACME certificates in the last hour (production's rate limit is shared).
    pub(super) fn ration_certificates(&self, desired: &mut crate::model::DesiredState) {
        if desired.env.preview.is_none() {
            return;
        }
        let per_hour = self
            .tracked_config()
            .and_then(|config| {
                config.project.doc.previews.as_ref().map(crate::model::kinds::Previews::certificates_per_hour)
            })
            .unwrap_or(crate::model::kinds::Previews::DEFAULT_CERTIFICATES_PER_HOUR);
        let mut state = write(&self.previews);
        let warnings = crate::model::preview::ration_certificates(
            &mut desired.domains,
            &mut state.certificates,
            per_hour,
            now_ms(),
        );
        while state.certificates.len() > REMEMBERED_CERTIFICATES {
            let oldest = state.certificates.iter().min_by_key(|(_, when)| **when).map(|(host, _)| host.clone());
            if let Some(host) = oldest {
                state.certificates.remove(&host);
            }
        }
        drop(state);
        desired.warnings.extend(warnings);
    }

    /// The tracked branch's `previews.labels`.
    fn preview_labels(&self) -> Vec<String> {
        self.tracked_config()
            .and_then(|config| PreviewPolicy::of(&config.project.doc))
            .map(|policy| policy.labels)
            .unwrap_or_default()
    }

    /// Why preview `env` may not run commit `sha` (its pull request's label was added on another commit, and the
    /// author is not trusted), checked by the preview's worker before anything of the commit is applied, whatever
    /// woke it. `None` for other environments and for approved commits.
    pub(super) fn preview_unapproved(&self, env: &str, sha: &str) -> Option<String> {
        let number: u64 = env.strip_prefix("pr-")?.parse().ok()?;
        let policy = PreviewPolicy::of(&self.tracked_config()?.project.doc)?;
        let known = read(&self.previews).open.get(&number).cloned();
        let Some(pr) = known else {
            return (!policy.labels.is_empty()).then(|| "awaiting approval: the pull request is not known".to_owned());
        };
        awaiting_approval(&policy, &PullRequest { head_sha: sha.to_owned(), ..pr })
    }

    /// The previews as the pages show them.
    pub fn previews(&self) -> PreviewsView {
        let state = read(&self.previews);
        PreviewsView {
            enabled: state.enabled,
            forge: self.forge.is_some(),
            list_error: state.list_error.clone(),
            listed_ms: state.listed_ms,
            entries: state.view.clone(),
        }
    }

    /// The pull request that preview environment `env` previews, if it is one.
    pub fn pull_request_of(&self, env: &str) -> Option<PullRequest> {
        let number: u64 = env.strip_prefix("pr-")?.parse().ok()?;
        read(&self.previews).open.get(&number).cloned()
    }

    /// Takes preview triggers one at a time until the daemon stops, and wakes itself for the next resync or the
    /// next preview to expire.
    pub(super) async fn previews_worker(self: Arc<Self>) {
        let mut wait = Duration::from_secs(5 * 60);
        loop {
            tokio::select! {
                biased;
                () = self.stopped() => return,
                taken = async {
                    let taken = self.previews_trigger.next().await;
                    self.until_leading().await;
                    taken
                } => {
                    let span = info_span!("previews", trigger = taken.trigger.as_str());
                    wait = self.reconcile_previews(taken).instrument(span).await;
                }
                () = tokio::time::sleep(wait) => self.previews_trigger.fire(Trigger::Poll),
            }
        }
    }

    /// One pass: read the forge's list (when there is forge access), decide, start and stop previews. Returns how
    /// long until the next pass is due without an event.
    async fn reconcile_previews(self: &Arc<Self>, taken: super::trigger::Taken) -> Duration {
        let Some(tracked) = self.tracked_config() else { return Duration::from_secs(5) };
        let policy = PreviewPolicy::of(&tracked.project.doc);
        write(&self.previews).enabled = policy.is_some();
        if let Some(forge) = &self.forge {
            match forge.open_pull_requests().await {
                Ok(open) => self.take_forge_list(open).await,
                Err(error) => {
                    warn!(%error, "cannot read the forge's open pull requests; no preview is torn down until it can");
                    write(&self.previews).list_error = Some(error);
                }
            }
        }
        let snapshot = match self.fetcher.snapshot(taken.fetch_after).await {
            Ok((snapshot, took)) => {
                self.observe_fetch(took);
                Some(snapshot)
            }
            Err(error) => {
                warn!(%error, "cannot fetch the preview branches");
                None
            }
        };
        let policy =
            policy.unwrap_or(PreviewPolicy { resync: Duration::from_secs(5 * 60), ..PreviewPolicy::default() });
        let candidates = self.preview_candidates(&policy, snapshot.as_deref());
        let running: BTreeSet<String> = self
            .environments()
            .iter()
            .filter(|env| is_preview(&env.name) && env.branch().is_some())
            .map(|env| env.name.clone())
            .collect();
        let now = now_ms();
        let decision = decide(&policy, &candidates, &running, now);
        let project = self.policy().map(|policy| policy.project).unwrap_or_default();
        for candidate in candidates.iter().filter(|candidate| decision.runs(&candidate.env)) {
            let listed = ListedEnvironment {
                name: candidate.env.clone(),
                branch: candidate.git_ref.clone(),
                host_template: None,
            };
            self.run_preview(&listed, &project, taken.fetch_after).await;
        }
        for (env, reason) in &decision.destroy {
            if let Some(handle) = self.env(env)
                && handle.unlist()
            {
                info!(env = %env, %reason, "tearing the preview down");
                handle.trigger.fire(Trigger::Removed);
            }
        }
        self.show_previews(&candidates, decision.standings);
        self.next_preview_pass(&policy, &candidates, now)
    }

    /// Replaces the open pull requests by the forge's list, keeping when each head was first seen.
    async fn take_forge_list(&self, open: Vec<PullRequest>) {
        let labels = self.preview_labels();
        {
            let mut state = write(&self.previews);
            let now = now_ms();
            state.open = open
                .into_iter()
                .map(|pr| {
                    let known = state.open.get(&pr.number);
                    let pushed_ms = match known {
                        Some(known) if known.head_sha == pr.head_sha => known.pushed_ms,
                        _ => now,
                    };
                    let approved_sha = approval(&labels, known, &pr, false);
                    (pr.number, PullRequest { pushed_ms, approved_sha, ..pr })
                })
                .collect();
            state.list_error = None;
            state.listed_ms = Some(now);
        }
        self.remember_pull_requests().await;
    }

    /// Every open pull request, and every branch of `snapshot` that `previews.branches` names.
    fn preview_candidates(&self, policy: &PreviewPolicy, snapshot: Option<&crate::source::Snapshot>) -> Vec<Candidate> {
        let merge_requests = self.forge.as_ref().is_some_and(|forge| forge.uses_merge_requests());
        let mut state = write(&self.previews);
        let now = now_ms();
        if let Some(snapshot) = snapshot {
            let previewed: BTreeMap<String, String> = snapshot
                .branches
                .iter()
                .filter(|(branch, _)| !branch.starts_with("refs/") && branch_previewed(&policy.branches, branch))
                .map(|(branch, sha)| (branch.clone(), sha.clone()))
                .collect();
            let before = std::mem::take(&mut state.branches);
            state.branches = previewed
                .into_iter()
                .map(|(branch, sha)| {
                    let seen = match before.get(&branch) {
                        Some((known, seen)) if *known == sha => *seen,
                        _ => now,
                    };
                    (branch, (sha, seen))
                })
                .collect();
        }
        let pull_requests = state.open.values().map(|pr| Candidate {
            env: format!("pr-{}", pr.number),
            git_ref: review_ref(merge_requests, pr.number),
            pushed_ms: pr.pushed_ms,
            pull_request: Some(pr.clone()),
        });
        let project = self.policy().map(|policy| policy.project).unwrap_or_default();
        let branches = state.branches.iter().map(|(branch, (_, seen))| Candidate {
            env: crate::model::Environment::branch(&project, branch).name,
            git_ref: branch.clone(),
            pushed_ms: *seen,
            pull_request: None,
        });
        pull_requests.chain(branches).collect()
    }

    /// Starts the preview's worker, or points it at the candidate's ref.
    async fn run_preview(
        self: &Arc<Self>,
        listed: &ListedEnvironment,
        project: &str,
        seen: Option<std::time::Instant>,
    ) {
        let _one_at_a_time = self.listing_changes.lock().await;
        match self.env(&listed.name) {
            Some(handle) => {
                let source = self.settings.source.describe_branch(&listed.branch);
                if handle.relist(listed, project, source) {
                    handle.trigger.fire(Trigger::Poll);
                }
            }
            None => {
                info!(env = %listed.name, git_ref = %listed.branch, "starting a preview");
                let handle = self.add_env(listed, project);
                handle.trigger.fire_seen(Trigger::Startup, seen);
                drop(_one_at_a_time);
                self.remember_environment_list().await;
            }
        }
        let _ = self.changes.send(());
    }

    fn show_previews(&self, candidates: &[Candidate], mut standings: BTreeMap<String, Standing>) {
        let entries = candidates
            .iter()
            .filter_map(|candidate| {
                Some(PreviewEntry {
                    env: candidate.env.clone(),
                    pull_request: candidate.pull_request.clone(),
                    branch: candidate.pull_request.is_none().then(|| candidate.git_ref.clone()),
                    standing: standings.remove(&candidate.env)?,
                })
            })
            .collect();
        write(&self.previews).view = entries;
        let _ = self.changes.send(());
    }

    /// The next resync, or sooner the next preview to expire.
    fn next_preview_pass(&self, policy: &PreviewPolicy, candidates: &[Candidate], now: i64) -> Duration {
        let expiring = policy.ttl.and_then(|ttl| {
            let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            candidates
                .iter()
                .map(|candidate| candidate.pushed_ms.saturating_add(ttl).saturating_add(1) - now)
                .filter(|left| *left > 0)
                .min()
        });
        let resync = if self.forge.is_some() { policy.resync } else { Duration::from_secs(60) };
        expiring.map_or(resync, |left| resync.min(Duration::from_millis(u64::try_from(left).unwrap_or(0))))
    }

    /// Keeps the open pull requests for the next start (without forge access nothing else would know them).
    async fn remember_pull_requests(&self) {
        let open: Vec<PullRequest> = read(&self.previews).open.values().cloned().collect();
        if let Err(error) = self.store.remember_pull_requests(&open).await {
            warn!(%error, "cannot remember the open pull requests");
        }
    }

    /// The open pull requests of the last run.
    pub(super) async fn restore_pull_requests(&self) {
        match self.store.pull_requests().await {
            Ok(open) => write(&self.previews).open = open.into_iter().map(|pr| (pr.number, pr)).collect(),
            Err(error) => warn!(%error, "cannot read the open pull requests of the last run"),
        }
    }
}

/// What merging a pull request's head would change in production.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgainstProduction {
    pub head_sha: String,
    /// The plan from what production runs to the head's config; `None` when the head is invalid or production
    /// could not be read.
    pub plan: Option<crate::plan::Plan>,
    /// Why there is no plan.
    pub error: Option<String>,
}

impl AgainstProduction {
    pub fn invalid(commit: &crate::source::CommitInfo, first_problem: String) -> AgainstProduction {
        AgainstProduction {
            head_sha: commit.sha.clone(),
            plan: None,
            error: Some(format!("the pull request's config is invalid: {first_problem}")),
        }
    }

    /// One line for the commit status: "2 to update, 1 to create", or the error.
    pub fn summary(&self) -> String {
        match (&self.plan, &self.error) {
            (Some(plan), _) if !plan.has_changes() => "no change to production".to_owned(),
            (Some(plan), _) => {
                let summary = &plan.summary;
                let parts = [
                    (summary.create, "to create"),
                    (summary.update, "to update"),
                    (summary.scale, "to scale"),
                    (summary.repair, "to repair"),
                    (summary.delete, "to delete"),
                ];
                parts
                    .iter()
                    .filter(|(count, _)| *count > 0)
                    .map(|(count, what)| format!("{count} {what}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            (None, Some(error)) => error.clone(),
            (None, None) => "no plan".to_owned(),
        }
    }
}

impl Daemon {
    /// The plan from what production runs to `config` (a pull request's head, under the tracked branch's policy).
    /// No secret is read: each is taken to be what production runs, so the plan never touches their values.
    pub(super) async fn plan_against_production(
        &self,
        config: &crate::model::Config,
        commit: &crate::source::CommitInfo,
    ) -> AgainstProduction {
        let production = crate::model::Environment::production(config.project_name());
        let mut desired = crate::build::desired_state(&crate::build::Inputs {
            config,
            env: &production,
            commit: Some(&commit.sha),
            sync: self.settings.sync,
            claims: &self.claims(),
            scaling: &crate::build::ScalingRecords::default(),
            now: self.settings.clock.now(),
        })
        .desired;
        let fail = |error: String| AgainstProduction { head_sha: commit.sha.clone(), plan: None, error: Some(error) };
        let backend = match self.backend_for(&production.name).await {
            Ok(backend) => backend,
            Err(error) => return fail(format!("cannot read production: {error}")),
        };
        let observed = match backend.observe(&production).await {
            Ok(observed) => observed,
            Err(error) => return fail(format!("cannot read production: {error}")),
        };
        self.settings.secrets.seal_without_values(&mut desired);
        desired.assume_unresolved_secrets_unchanged(&observed);
        let plan = crate::plan::plan(&desired, &observed);
        AgainstProduction { head_sha: commit.sha.clone(), plan: Some(plan.without_digests()), error: None }
    }

    /// Tells the forge what a pull request's preview and plan are, when that changed since the last report. The
    /// posting runs on its own task: a slow or failing forge never holds up a reconcile.
    pub(super) fn report_preview(&self, handle: &super::EnvHandle, torn_down: bool) {
        let Some(number) = handle.name.strip_prefix("pr-").and_then(|number| number.parse::<u64>().ok()) else {
            return;
        };
        let state = handle.state();
        let Some(against) = state.against_production.clone() else { return };
        let comment = self
            .tracked_config()
            .and_then(|config| PreviewPolicy::of(&config.project.doc))
            .is_some_and(|policy| policy.comment);
        let urls: Vec<String> = state.apps.iter().flat_map(|app| app.domain_urls.clone()).collect();
        let preview = if torn_down {
            "torn down".to_owned()
        } else {
            match (&state.sync_status, &state.error) {
                (super::SyncStatus::Synced, _) => "running".to_owned(),
                (_, Some(error)) => format!("not running: {error}"),
                (status, None) => format!("{status:?}").to_lowercase(),
            }
        };
        let report = PullRequestReport {
            number,
            head_sha: against.head_sha.clone(),
            success: against.plan.is_some(),
            summary: against.summary(),
            diff: against.plan.as_ref().map(|plan| crate::plan::render::text(plan, false)).unwrap_or_default(),
            urls,
            preview,
            page: format!("/env/{}", handle.name),
            comment,
        };
        let fingerprint = format!("{report:?}");
        {
            let mut state = write(&self.previews);
            if state.reported.get(&number) == Some(&fingerprint) {
                return;
            }
            state.reported.insert(number, fingerprint);
        }
        let Some(forge) = self.forge.clone() else { return };
        tokio::spawn(async move {
            if let Err(error) = forge.report(report).await {
                warn!(%error, pull_request = number, "cannot report the plan to the forge");
            }
        });
    }
}
