//! One fetch serves every environment: the newest snapshot of all branches is shared, and a worker that needs one
//! fresher than its trigger waits for the fetch in progress instead of starting another. A fetch that hangs past
//! `--fetch-timeout` fails; its blocking thread may still run, so no second fetch starts on the same mirror until it
//! ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::source::{Fetched, Snapshot, Source};

/// Why no snapshot or branch could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchFailed {
    #[error("{0}")]
    Source(String),
    #[error("the previous fetch of {0} still hangs; railyard tries again after it ends")]
    StillHanging(String),
    #[error("fetching {repository} took longer than {seconds} s (--fetch-timeout); check that the remote answers")]
    TimedOut { repository: String, seconds: u64 },
    #[error("the fetch task failed: {0}")]
    Task(String),
}

/// The shared fetcher of a daemon.
pub struct Fetcher {
    source: Source,
    timeout: Duration,
    newest: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    hanging: Arc<AtomicBool>,
}

impl Fetcher {
    pub fn new(source: Source, timeout: Duration) -> Fetcher {
        Fetcher { source, timeout, newest: Mutex::new(None), hanging: Arc::new(AtomicBool::new(false)) }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A snapshot fetched no earlier than `not_before`; `None` takes the newest there is (fetching when there is
    /// none yet). Concurrent callers share one fetch. Returns the snapshot and how long the caller's fetch took
    /// (zero when it was shared).
    pub async fn snapshot(&self, not_before: Option<Instant>) -> Result<(Arc<Snapshot>, Duration), FetchFailed> {
        let mut newest = self.newest.lock().await;
        if let Some((started, snapshot)) = newest.as_ref()
            && not_before.is_none_or(|wanted| *started >= wanted)
        {
            return Ok((Arc::clone(snapshot), Duration::ZERO));
        }
        let started = Instant::now();
        let snapshot = Arc::new(self.fetch().await?);
        *newest = Some((started, Arc::clone(&snapshot)));
        Ok((snapshot, started.elapsed()))
    }

    async fn fetch(&self) -> Result<Snapshot, FetchFailed> {
        if self.hanging.swap(true, Ordering::SeqCst) {
            return Err(FetchFailed::StillHanging(self.source.describe()));
        }
        let source = self.source.clone();
        let hanging = Arc::clone(&self.hanging);
        let task = tokio::task::spawn_blocking(move || {
            let fetched = source.fetch_all();
            hanging.store(false, Ordering::SeqCst);
            fetched
        });
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), task).await {
            Ok(Ok(fetched)) => fetched.map_err(|error| FetchFailed::Source(error.to_string())),
            Ok(Err(error)) => {
                self.hanging.store(false, Ordering::SeqCst);
                Err(FetchFailed::Task(error.to_string()))
            }
            Err(_) => {
                Err(FetchFailed::TimedOut { repository: self.source.describe(), seconds: self.timeout.as_secs() })
            }
        }
    }

    /// The files of `branch` at the snapshot, read on a blocking thread (no network).
    pub async fn read(&self, snapshot: Arc<Snapshot>, branch: &str) -> Result<Fetched, FetchFailed> {
        let source = self.source.clone();
        let branch = branch.to_owned();
        tokio::task::spawn_blocking(move || source.read_branch(&snapshot, &branch))
            .await
            .map_err(|error| FetchFailed::Task(error.to_string()))?
            .map_err(|error| FetchFailed::Source(error.to_string()))
    }
}
