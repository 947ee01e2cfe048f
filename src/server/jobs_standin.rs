//! TEMPORARY stand-ins for the store's job runs and the daemon's `start_job` until the lead lands them on main;
//! deleted at the merge that brings them.

use serde::Serialize;

use crate::backend::JobRun;
use crate::daemon::Daemon;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct StoredJobRun {
    pub id: i64,
    #[serde(flatten)]
    pub run: JobRun,
}

pub(crate) trait JobRunsStandIn {
    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<StoredJobRun>, StoreError>;
    async fn job_run(&self, id: i64) -> Result<Option<StoredJobRun>, StoreError>;
}

impl JobRunsStandIn for Store {
    async fn job_runs(&self, _env: &str, _job: Option<&str>, _limit: u32) -> Result<Vec<StoredJobRun>, StoreError> {
        Ok(Vec::new())
    }

    async fn job_run(&self, _id: i64) -> Result<Option<StoredJobRun>, StoreError> {
        Ok(None)
    }
}

#[allow(dead_code)]
#[derive(Debug, thiserror::Error)]
pub enum StartJobError {
    #[error("no environment `{0}`")]
    NoEnvironment(String),
    #[error("environment `{env}` has no Job `{job}`")]
    NoJob { env: String, job: String },
    #[error("this replica follows; ask the leader")]
    Follower,
    #[error("{0}")]
    Store(String),
}

pub(crate) trait StartJobStandIn {
    async fn start_job(&self, env: &str, job: &str, who: String) -> Result<(), StartJobError>;
}

impl StartJobStandIn for Daemon {
    async fn start_job(&self, env: &str, job: &str, _who: String) -> Result<(), StartJobError> {
        if self.env(env).is_none() {
            return Err(StartJobError::NoEnvironment(env.to_owned()));
        }
        Err(StartJobError::NoJob { env: env.to_owned(), job: job.to_owned() })
    }
}
