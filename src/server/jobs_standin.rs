//! TEMPORARY stand-in for the daemon's `start_job` until the lead lands them on main;
//! deleted at the merge that brings them.

use crate::daemon::Daemon;

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
