//! What every backend reports of a Job's run: how it was triggered, how it ended, its exit code and the last of its
//! output (secrets redacted). The daemon records runs in the store; the backend only carries them out.

use serde::{Deserialize, Serialize};

use crate::model::kinds::Concurrency;
use crate::model::{Environment, JobSpec};

/// Most bytes of a run's output kept (its end: where the error is).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Lines of output quoted in a failed run's error.
pub const ERROR_TAIL_LINES: usize = 10;

/// Why a run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum JobTrigger {
    /// An apply: the Job's spec had not run to success, or an app it hooks updated.
    Apply,
    /// Its schedule fired at `at` (unix milliseconds).
    Schedule { at: i64 },
    /// `railyard run` or the API, by `who` (a token's name, or `loopback`).
    Manual { who: String },
}

impl JobTrigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobTrigger::Apply => "apply",
            JobTrigger::Schedule { .. } => "schedule",
            JobTrigger::Manual { .. } => "manual",
        }
    }

    /// What to do when a run of the same Job is in progress: an apply waits for a run of the same spec (started
    /// before a restart) rather than starting it twice; a schedule and a manual run follow the Job's policy.
    pub fn concurrency(&self, job: &JobSpec) -> RunPolicy {
        match self {
            JobTrigger::Apply => RunPolicy::Attach,
            JobTrigger::Schedule { .. } | JobTrigger::Manual { .. } => {
                match job.schedule.as_ref().map(|schedule| schedule.concurrency) {
                    Some(Concurrency::Forbid) => RunPolicy::Forbid,
                    Some(Concurrency::Replace) => RunPolicy::Replace,
                    Some(Concurrency::Allow) | None => RunPolicy::Allow,
                }
            }
        }
    }
}

/// What a new run does about runs of the same Job in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPolicy {
    /// A run of the same spec in progress is waited for instead of starting another.
    Attach,
    /// The new run is skipped.
    Forbid,
    /// Runs in progress are stopped first.
    Replace,
    /// Runs side by side.
    Allow,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum JobOutcome {
    Succeeded,
    /// It exited non-zero (after its retries), or could not start.
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        reason: String,
    },
    /// It ran past its timeout and was killed.
    TimedOut {
        seconds: u64,
    },
    /// It did not start: a run was in progress (`concurrency: forbid`).
    Skipped {
        reason: String,
    },
}

impl JobOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::TimedOut { .. } => "timedOut",
            JobOutcome::Skipped { .. } => "skipped",
        }
    }

    pub fn exit_code(&self) -> Option<i64> {
        match self {
            JobOutcome::Failed { exit_code, .. } => *exit_code,
            JobOutcome::Succeeded => Some(0),
            _ => None,
        }
    }
}

/// One run of a Job, as the backend carried it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub job: String,
    pub env: String,
    pub spec_hash: String,
    pub trigger: JobTrigger,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub outcome: JobOutcome,
    /// Tries made (1 + the retries used).
    pub tries: u32,
    /// The end of its output (stdout and stderr), at most [`MAX_OUTPUT_BYTES`], secret values redacted.
    pub output: String,
    /// The platform's own id of a run it started by itself (a Kubernetes Job's uid), so that it is recorded once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl JobRun {
    pub fn succeeded(&self) -> bool {
        self.outcome == JobOutcome::Succeeded
    }

    /// A run of `job` in `env` started at `started_at` that ended now as `outcome` after `tries`, with the end of
    /// `output` (already redacted) kept.
    pub fn ended(
        env: &Environment,
        job: &JobSpec,
        trigger: JobTrigger,
        started_at: i64,
        outcome: JobOutcome,
        tries: u32,
        output: &str,
    ) -> JobRun {
        JobRun {
            job: job.name.clone(),
            env: env.name.clone(),
            spec_hash: job.spec_hash(),
            trigger,
            started_at,
            finished_at: now_millis(),
            outcome,
            tries,
            output: bounded_output(output),
            key: None,
        }
    }

    /// A run that never started, for `reason`.
    pub fn skipped(env: &Environment, job: &JobSpec, trigger: JobTrigger, reason: String) -> JobRun {
        JobRun::ended(env, job, trigger, now_millis(), JobOutcome::Skipped { reason }, 0, "")
    }

    /// What the sync reports when the run did not succeed: its outcome, exit code and last lines.
    pub fn failure(&self) -> Option<String> {
        let what = match &self.outcome {
            JobOutcome::Succeeded => return None,
            JobOutcome::Failed { exit_code: Some(code), reason } => format!("exit code {code}: {reason}"),
            JobOutcome::Failed { exit_code: None, reason } => reason.clone(),
            JobOutcome::TimedOut { seconds } => format!("killed after its timeout of {seconds} s"),
            JobOutcome::Skipped { reason } => format!("skipped: {reason}"),
        };
        let tries = if self.tries > 1 { format!(" after {} tries", self.tries) } else { String::new() };
        let tail = last_lines(&self.output, ERROR_TAIL_LINES);
        let tail = if tail.is_empty() { String::new() } else { format!("; last output:\n{tail}") };
        Some(format!("job `{}` failed{tries} ({what}){tail}", self.job))
    }
}

/// The last `count` lines of `text`.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The end of `text`, at most [`MAX_OUTPUT_BYTES`], cut at a character boundary.
pub fn bounded_output(text: &str) -> String {
    if text.len() <= MAX_OUTPUT_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - MAX_OUTPUT_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Pause before try `number` (2, 3, ...) of a failed run: 1 s, 2 s, 4 s ... up to a minute.
pub fn retry_pause(number: u32) -> std::time::Duration {
    let exponent = number.saturating_sub(2).min(6);
    std::time::Duration::from_secs((1u64 << exponent).min(60))
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_job_its_exit_code_and_last_lines() {
        let run = JobRun {
            job: "migrate".into(),
            env: "production".into(),
            spec_hash: "abc".into(),
            trigger: JobTrigger::Apply,
            started_at: 0,
            finished_at: 1,
            outcome: JobOutcome::Failed { exit_code: Some(3), reason: "exited non-zero".into() },
            tries: 3,
            output: (1..=20).map(|n| format!("line {n}\n")).collect(),
            key: None,
        };
        let failure = run.failure().expect("failed");
        assert!(failure.starts_with("job `migrate` failed after 3 tries (exit code 3"), "{failure}");
        assert!(
            failure.contains("line 20") && failure.contains("line 11") && !failure.contains("line 10\n"),
            "{failure}"
        );
    }

    #[test]
    fn output_keeps_its_end_within_the_bound() {
        let long = "é".repeat(MAX_OUTPUT_BYTES);
        let kept = bounded_output(&long);
        assert!(kept.len() <= MAX_OUTPUT_BYTES && kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn retries_pause_longer_each_time_up_to_a_minute() {
        assert_eq!(retry_pause(2).as_secs(), 1);
        assert_eq!(retry_pause(3).as_secs(), 2);
        assert_eq!(retry_pause(20).as_secs(), 60);
    }
}
