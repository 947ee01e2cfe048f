//! A Job's desired state: what runs to completion, when it runs (once per spec, around apps' updates as a hook, or
//! on a schedule), and what is kept of its runs. Pure.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::desired::ContainerSpec;
use super::kinds::Concurrency;

/// Finished runs kept per outcome when the Job says nothing (Kubernetes CronJob's history limits).
pub const DEFAULT_KEEP_SUCCEEDED: u32 = 3;
pub const DEFAULT_KEEP_FAILED: u32 = 5;
/// How long a run may take when the Job says nothing.
pub const DEFAULT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// A Job as it should run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub name: String,
    /// What runs; it has no ports and no health check (a run ends by exiting).
    pub container: ContainerSpec,
    pub timeout_ms: u64,
    /// Tries after the first failed one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Apps updated only once this Job succeeded in the same apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Apps after whose healthy update this Job runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Apps that must be healthy before it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<JobSchedule>,
    pub keep: KeepRuns,
}

/// When a scheduled Job runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSchedule {
    /// Cron with seconds.
    pub cron: String,
    /// IANA time zone the cron is read in (the Project's `timezone`).
    pub timezone: String,
    #[serde(default)]
    pub concurrency: Concurrency,
    /// A missed run older than this is skipped; `None`: the last missed run is always made up, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_ms: Option<u64>,
}

/// Finished runs kept per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeepRuns {
    pub succeeded: u32,
    pub failed: u32,
}

impl Default for KeepRuns {
    fn default() -> KeepRuns {
        KeepRuns { succeeded: DEFAULT_KEEP_SUCCEEDED, failed: DEFAULT_KEEP_FAILED }
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl JobSpec {
    /// Names what a run of this Job does: its container (image, command, environment, volumes, resources). A Job
    /// without a schedule runs once per hash; changing only its retries, timeout, hooks or history starts no run.
    pub fn spec_hash(&self) -> String {
        let canonical = serde_json::to_vec(&self.container).unwrap_or_default();
        hex::encode(&Sha256::digest(&canonical)[..8])
    }

    /// What may be stored and shown: sensitive literals redacted.
    pub fn redacted(&self) -> JobSpec {
        JobSpec { container: self.container.redacted(), ..self.clone() }
    }

    /// The spec without any digest, as a pull request may see it.
    pub fn without_digests(&self) -> JobSpec {
        JobSpec { container: self.container.without_digests(), ..self.clone() }
    }

    /// Runs around apps' updates.
    pub fn is_hook(&self) -> bool {
        !self.before.is_empty() || !self.after.is_empty()
    }

    /// What must have applied before a run starts: its `dependsOn` and the apps it runs after.
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().chain(&self.after).map(String::as_str)
    }

    /// A Job with nothing but a name, for tests and for a Job whose last applied spec is unknown.
    pub fn bare(name: &str) -> JobSpec {
        JobSpec {
            name: name.to_owned(),
            container: super::AppSpec::bare(name).container,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retries: 0,
            before: Vec::new(),
            after: Vec::new(),
            depends_on: Vec::new(),
            schedule: None,
            keep: KeepRuns::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_runs_changes_the_hash() {
        let job = JobSpec {
            container: ContainerSpec { image: "web:1".to_owned(), ..JobSpec::bare("m").container },
            ..JobSpec::bare("m")
        };
        let hash = job.spec_hash();
        let retried = JobSpec { retries: 3, timeout_ms: 1, before: vec!["web".to_owned()], ..job.clone() };
        assert_eq!(retried.spec_hash(), hash);
        let newer = JobSpec { container: ContainerSpec { image: "web:2".to_owned(), ..job.container.clone() }, ..job };
        assert_ne!(newer.spec_hash(), hash);
    }
}
