//! What a reconcile leaves in the history: one [`SyncRecord`] per sync, failure, invalid commit, pending plan or
//! teardown; pending and invalid verdicts once, not on every poll that finds the same.

use tracing::warn;

use super::{EnvHandle, Reconciled};
use crate::daemon::{Daemon, SyncStatus, now_ms};
use crate::model::Diagnostic;
use crate::outcome::{SyncOutcome, Trigger};
use crate::plan::Plan;
use crate::source::{CommitInfo, short_sha};
use crate::store::SyncRecord;

/// What a record says beyond the environment and the time.
pub(super) struct Entry<'a> {
    pub trigger: Trigger,
    pub started_ms: i64,
    pub commit: Option<&'a CommitInfo>,
    pub outcome: SyncOutcome,
    pub summary: String,
    pub diff: String,
    pub error: Option<String>,
}

impl EnvHandle {
    pub(super) fn record_of(&self, entry: Entry<'_>) -> SyncRecord {
        SyncRecord {
            id: 0,
            env: self.name.clone(),
            commit_sha: entry.commit.map(|c| c.sha.clone()),
            commit_summary: entry.commit.map(|c| c.summary.clone()),
            trigger: entry.trigger,
            started_ms: entry.started_ms,
            finished_ms: now_ms(),
            outcome: entry.outcome,
            summary: entry.summary,
            diff: entry.diff,
            error: entry.error,
            build_output: String::new(),
        }
    }

    /// The output of the builds `plan` made, as the environment's state kept it: a heading per build, then its
    /// newest lines.
    fn build_output(&self, plan: &Plan) -> String {
        let builds = self.state().builds;
        let mut output = String::new();
        for build in builds.iter().filter(|build| plan.builds.iter().any(|step| step.image == build.image)) {
            output.push_str(&format!("== build {} ({}): {}\n", build.app, build.image, build.status));
            for line in &build.output {
                output.push_str(line);
                output.push('\n');
            }
        }
        output
    }

    /// A record about the environment as a whole (a teardown, a panic), at the commit it runs.
    pub(super) fn removal_record(
        &self,
        trigger: Trigger,
        started_ms: i64,
        outcome: SyncOutcome,
        summary: &str,
        error: Option<String>,
    ) -> SyncRecord {
        let commit = self.state().commit;
        let summary = summary.to_owned();
        self.record_of(Entry {
            trigger,
            started_ms,
            commit: commit.as_ref(),
            outcome,
            summary,
            diff: String::new(),
            error,
        })
    }

    /// A record of `plan` at `commit`, with its redacted diffs.
    pub(super) fn sync_record(
        &self,
        trigger: Trigger,
        started_ms: i64,
        commit: Option<&CommitInfo>,
        plan: &Plan,
        outcome: SyncOutcome,
        error: Option<String>,
    ) -> SyncRecord {
        let diff: String = plan
            .apps
            .iter()
            .filter_map(|a| a.diff.as_deref())
            .chain(plan.domains.iter().filter_map(|d| d.diff.as_deref()))
            .collect();
        let summary = match self.scaling_figures(trigger) {
            Some(figures) if plan.has_changes() => format!("{} ({figures})", plan.summary),
            _ => plan.summary.to_string(),
        };
        let record = self.record_of(Entry { trigger, started_ms, commit, outcome, summary, diff, error });
        SyncRecord { build_output: self.build_output(plan), ..record }
    }

    /// Records a pending or invalid verdict once, not on every poll that finds the same; whether it was new.
    pub(super) async fn record_once(&self, daemon: &Daemon, record: SyncRecord) -> bool {
        let key = format!(
            "{}|{}|{}|{}",
            record.outcome,
            record.commit_sha.as_deref().unwrap_or_default(),
            record.summary,
            record.diff.len()
        );
        {
            let mut last = self.last_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.as_deref() == Some(key.as_str()) {
                return false;
            }
            *last = Some(key);
        }
        daemon.record(record).await;
        true
    }

    /// A commit that failed validation: recorded once, shown with its problems; the last good state keeps running.
    pub(super) async fn invalid(
        &self,
        daemon: &Daemon,
        trigger: Trigger,
        started_ms: i64,
        commit: CommitInfo,
        diagnostics: Vec<Diagnostic>,
    ) -> Reconciled {
        let first_problem = diagnostics.first().map(ToString::to_string).unwrap_or_default();
        let message = format!(
            "commit {} is invalid ({} problem(s)); the last good state keeps running: {first_problem}",
            short_sha(&commit.sha),
            diagnostics.len(),
        );
        let record = self.record_of(Entry {
            trigger,
            started_ms,
            commit: Some(&commit),
            outcome: SyncOutcome::Invalid,
            summary: format!("{} problem(s)", diagnostics.len()),
            diff: String::new(),
            error: Some(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
        });
        // Said once per commit, not on every poll and drift check that finds it again.
        if self.record_once(daemon, record).await {
            warn!(%message);
        }
        let preview = crate::daemon::previews::is_preview(&self.name);
        self.update(|state| {
            if preview {
                state.against_production =
                    Some(crate::daemon::previews::AgainstProduction::invalid(&commit, first_problem));
            }
            state.sync_status = SyncStatus::Error;
            state.error = Some(message);
            state.diagnostics = diagnostics;
            state.invalid_commit = Some(commit);
            state.last_checked_ms = Some(now_ms());
        });
        Reconciled::Invalid
    }
}
