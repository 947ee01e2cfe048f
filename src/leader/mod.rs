//! Leader election among railyard replicas. One leads: it alone runs the environment workers, previews, schedules
//! and the autoscaler; the others serve pages, the API and `/metrics` from the shared store and queue what they are
//! asked for there. The lease lives in a lock ([`LeaseLock`]): a Kubernetes Lease in railyard's namespace, or a row
//! of the store when no cluster is configured.
//!
//! The algorithm is client-go's (and controller-runtime's timings): every `retry` the leader renews the lease; a
//! candidate takes it over only when its record has not changed for `lease` since the candidate last saw it change,
//! measured on the candidate's own clock (clocks are never compared). The leader writes only while its last renewal
//! began less than `renew_deadline` ago, and `renew_deadline < lease`: by the time another replica may take over,
//! the old leader has stopped writing for `lease - renew_deadline` (fencing, [`Elector::check`]).

pub mod kubernetes;

pub use kubernetes::KubernetesLockSettings;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::store::{LeaseRecord, Store, StoreError};

/// The lease's name, in the store or as the Lease object.
pub const LEASE_NAME: &str = "railyard";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot reach the lease in the store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "cannot reach the Lease {namespace}/{name} on the cluster: {message}; check the kubeconfig and that railyard's service account may get, create and update leases in {namespace}"
    )]
    Kubernetes { namespace: String, name: String, message: String },
    #[error("the in-memory lease was told to be unreachable; call `unreachable(false)` to make it answer again")]
    MemoryUnreachable,
}

/// How long a lease counts, how long a leader keeps writing without a renewal, and how often everyone tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl Default for Timings {
    /// controller-runtime's defaults: lease 15 s, renew deadline 10 s, retry 2 s.
    fn default() -> Timings {
        Timings {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// Where a lease is kept, with its version: a write naming an older version loses.
#[async_trait]
pub trait LeaseLock: Send + Sync {
    async fn read(&self) -> Result<Option<(LeaseRecord, String)>, LeaderError>;
    /// Writes `record` if the lease's version is still `expected` (`None`: if there is no lease yet); false when
    /// another write came first.
    async fn write(&self, expected: Option<&str>, record: &LeaseRecord) -> Result<bool, LeaderError>;
    /// For logs and pages: `Lease railyard/railyard`, `the store's lease`.
    fn describe(&self) -> String;
}

/// The lease as a row of the store (SQLite on one host, or PostgreSQL), for replicas without a cluster.
pub struct StoreLock {
    store: Arc<Store>,
}

impl StoreLock {
    pub fn new(store: Arc<Store>) -> StoreLock {
        StoreLock { store }
    }
}

#[async_trait]
impl LeaseLock for StoreLock {
    async fn read(&self) -> Result<Option<(LeaseRecord, String)>, LeaderError> {
        Ok(self.store.lease(LEASE_NAME).await?.map(|(record, version)| (record, version.to_string())))
    }

    async fn write(&self, expected: Option<&str>, record: &LeaseRecord) -> Result<bool, LeaderError> {
        // A version that does not read as the store's own can match no row.
        let expected = match expected.map(str::parse::<i64>) {
            Some(Ok(version)) => Some(version),
            Some(Err(_)) => return Ok(false),
            None => None,
        };
        Ok(self.store.swap_lease(LEASE_NAME, expected, record).await?)
    }

    fn describe(&self) -> String {
        format!("the store's lease `{LEASE_NAME}`")
    }
}

/// Who leads, as one replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leadership {
    /// This replica.
    pub identity: String,
    /// Whether this replica leads (its lease holds).
    pub leading: bool,
    /// The replica holding the lease, when one does.
    pub leader: Option<String>,
    /// Since when the leader holds it (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// The lease's hand-overs so far: with the leader, it names the term.
    pub term: i64,
    /// Where the lease is kept.
    pub lock: String,
    /// Why the lease could not be read or written, when it could not.
    pub error: Option<String>,
}

/// What a candidate saw last of the lease: the version and when (on its own clock) it changed.
struct Observed {
    version: String,
    at: Instant,
}

/// Runs the election for one replica and answers whether it may write.
pub struct Elector {
    lock: Arc<dyn LeaseLock>,
    identity: String,
    timings: Timings,
    view: watch::Sender<Leadership>,
    /// Until when the lease this replica holds lets it write; `None` when it does not lead.
    writes_until: Mutex<Option<Instant>>,
}

impl Elector {
    pub fn new(lock: Arc<dyn LeaseLock>, identity: String, timings: Timings) -> Arc<Elector> {
        let view = Leadership {
            identity: identity.clone(),
            leading: false,
            leader: None,
            since_ms: None,
            term: 0,
            lock: lock.describe(),
            error: None,
        };
        Arc::new(Elector { lock, identity, timings, view: watch::Sender::new(view), writes_until: Mutex::new(None) })
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Who leads now, as this replica last saw it.
    pub fn leadership(&self) -> Leadership {
        let mut view = self.view.borrow().clone();
        view.leading = self.leads();
        view
    }

    /// Changes of [`Elector::leadership`].
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.view.subscribe()
    }

    /// Whether this replica leads and may write now.
    pub fn leads(&self) -> bool {
        self.writes_until().is_some_and(|until| Instant::now() < until)
    }

    fn writes_until(&self) -> Option<Instant> {
        *self.writes_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once this replica leads.
    pub async fn until_leading(&self) {
        let mut changes = self.view.subscribe();
        while !self.leads() {
            // A lease that lapses sends no change: look again at the next retry at the latest.
            let _ = tokio::time::timeout(self.timings.retry, changes.changed()).await;
        }
    }

    /// Campaigns and renews until `stop` resolves, then gives the lease up so that another replica takes over at
    /// once instead of after `lease`.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut observed: Option<Observed> = None;
        tokio::pin!(stop);
        loop {
            self.round(&mut observed).await;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(self.timings.retry) => {}
            }
        }
        self.release().await;
    }

    /// One attempt to take or renew the lease, and what follows from it.
    async fn round(&self, observed: &mut Option<Observed>) {
        let attempt = Instant::now();
        // A lease this replica held, even one that lapsed while it was not running (a paused process): losing it
        // is said once.
        let was_leading = self.writes_until().is_some();
        let outcome = self.try_acquire_or_renew(observed).await;
        let (leader, since_ms, term, error) = match outcome {
            Ok(Attempt::Leading(record)) => {
                *self.writes_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(attempt + self.timings.renew_deadline);
                (Some(record.holder), Some(record.acquired_ms), record.transitions, None)
            }
            Ok(Attempt::Following(record)) => {
                let leader = (!record.holder.is_empty()).then_some(record.holder);
                (leader, Some(record.acquired_ms), record.transitions, None)
            }
            Ok(Attempt::Lost) => {
                let view = self.view.borrow().clone();
                (view.leader, view.since_ms, view.term, None)
            }
            Err(error) => {
                warn!(%error, "cannot renew or take the lease");
                let view = self.view.borrow().clone();
                (view.leader, view.since_ms, view.term, Some(error.to_string()))
            }
        };
        let leading = self.leads();
        if leading && !was_leading {
            info!(identity = %self.identity, term, "leading: this replica took the lease");
        } else if was_leading && !leading {
            warn!(identity = %self.identity, "lost the lease: this replica stops writing and follows");
            *self.writes_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        self.view.send_if_modified(|view| {
            let next = Leadership { leading, leader, since_ms, term, error, ..view.clone() };
            let changed = *view != next;
            *view = next;
            changed
        });
    }

    async fn try_acquire_or_renew(&self, observed: &mut Option<Observed>) -> Result<Attempt, LeaderError> {
        let now_ms = crate::clock::now_ms();
        let duration_ms = i64::try_from(self.timings.lease.as_millis()).unwrap_or(i64::MAX);
        let Some((current, version)) = self.lock.read().await? else {
            let record = LeaseRecord {
                holder: self.identity.clone(),
                acquired_ms: now_ms,
                renewed_ms: now_ms,
                duration_ms,
                transitions: 0,
            };
            return Ok(if self.lock.write(None, &record).await? { Attempt::Leading(record) } else { Attempt::Lost });
        };
        // When the read answered, not when it was sent: a slow read must not make the lease look older than it is.
        let read_at = Instant::now();
        if observed.as_ref().is_none_or(|seen| seen.version != version) {
            *observed = Some(Observed { version: version.clone(), at: read_at });
        }
        let seen_at = observed.as_ref().map_or(read_at, |seen| seen.at);
        let lease = Duration::from_millis(u64::try_from(current.duration_ms).unwrap_or(0));
        let held_by_another = !current.holder.is_empty() && current.holder != self.identity;
        if held_by_another && read_at < seen_at + lease {
            return Ok(Attempt::Following(current));
        }
        let record = if current.holder == self.identity {
            LeaseRecord { renewed_ms: now_ms, duration_ms, ..current.clone() }
        } else {
            LeaseRecord {
                holder: self.identity.clone(),
                acquired_ms: now_ms,
                renewed_ms: now_ms,
                duration_ms,
                transitions: current.transitions + 1,
            }
        };
        if self.lock.write(Some(&version), &record).await? {
            Ok(Attempt::Leading(record))
        } else {
            Ok(Attempt::Following(current))
        }
    }

    /// Gives the lease up (holder emptied), when this replica still holds it.
    async fn release(&self) {
        if !self.leads() {
            return;
        }
        *self.writes_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let released = async {
            let Some((current, version)) = self.lock.read().await? else { return Ok(false) };
            if current.holder != self.identity {
                return Ok(false);
            }
            let record = LeaseRecord { holder: String::new(), duration_ms: 1, ..current };
            self.lock.write(Some(&version), &record).await
        };
        match released.await {
            Ok(true) => info!(identity = %self.identity, "gave the lease up"),
            Ok(false) => {}
            Err(error) => warn!(%error, "cannot give the lease up; another replica takes it when it lapses"),
        }
    }
}

enum Attempt {
    Leading(LeaseRecord),
    Following(LeaseRecord),
    /// Another candidate created the lease first.
    Lost,
}

impl crate::backend::fenced::Fence for Elector {
    fn check(&self) -> Result<(), String> {
        if self.leads() {
            Ok(())
        } else {
            let leader = self.view.borrow().leader.clone().filter(|leader| *leader != self.identity);
            Err(match leader {
                Some(leader) => format!("{} leads", leader),
                None => "its lease lapsed".to_owned(),
            })
        }
    }
}

/// A lease kept in memory, shared by the electors of one process (tests, and replicas simulated in one process);
/// it can be made unreachable to stand for a lock that does not answer.
#[derive(Default)]
pub struct MemoryLock {
    lease: Mutex<Option<(LeaseRecord, u64)>>,
    unreachable: std::sync::atomic::AtomicBool,
}

impl MemoryLock {
    pub fn unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, std::sync::atomic::Ordering::SeqCst);
    }

    /// The lease as it stands.
    pub fn record(&self) -> Option<LeaseRecord> {
        self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|(record, _)| record.clone())
    }

    fn reachable(&self) -> Result<(), LeaderError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            Err(LeaderError::MemoryUnreachable)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl LeaseLock for MemoryLock {
    async fn read(&self) -> Result<Option<(LeaseRecord, String)>, LeaderError> {
        self.reachable()?;
        let lease = self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(lease.as_ref().map(|(record, version)| (record.clone(), version.to_string())))
    }

    async fn write(&self, expected: Option<&str>, record: &LeaseRecord) -> Result<bool, LeaderError> {
        self.reachable()?;
        let mut lease = self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = lease.as_ref().map(|(_, version)| version.to_string());
        if current.as_deref() != expected {
            return Ok(false);
        }
        let version = lease.as_ref().map_or(1, |(_, version)| version + 1);
        *lease = Some((record.clone(), version));
        Ok(true)
    }

    fn describe(&self) -> String {
        "an in-memory lease".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Electors `names` on one lock, each running until its sender is dropped or sent to.
    fn electors(lock: &Arc<MemoryLock>, names: &[&str]) -> Vec<(Arc<Elector>, tokio::task::JoinHandle<()>)> {
        names
            .iter()
            .map(|name| {
                let elector =
                    Elector::new(Arc::clone(lock) as Arc<dyn LeaseLock>, (*name).to_owned(), Timings::default());
                let running = Arc::clone(&elector);
                let task = tokio::spawn(async move { running.run(std::future::pending()).await });
                (elector, task)
            })
            .collect()
    }

    fn leaders(electors: &[(Arc<Elector>, tokio::task::JoinHandle<()>)]) -> Vec<String> {
        electors
            .iter()
            .filter(|(elector, _)| elector.leads())
            .map(|(elector, _)| elector.identity().to_owned())
            .collect()
    }

    /// Steps Tokio's paused clock by `step` `times` times, checking after each that at most one replica leads.
    async fn never_two(electors: &[(Arc<Elector>, tokio::task::JoinHandle<()>)], step: Duration, times: u32) {
        for _ in 0..times {
            tokio::time::sleep(step).await;
            let leading = leaders(electors);
            assert!(leading.len() <= 1, "two replicas lead at once: {leading:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn of_three_replicas_one_leads_and_keeps_leading_while_it_renews() {
        let lock = Arc::new(MemoryLock::default());
        let replicas = electors(&lock, &["a", "b", "c"]);
        never_two(&replicas, Duration::from_millis(250), 4).await;
        let first = leaders(&replicas);
        assert_eq!(first.len(), 1, "one replica took the free lease at once");
        never_two(&replicas, Duration::from_millis(500), 240).await;
        assert_eq!(leaders(&replicas), first, "two minutes on, the same replica leads: it renews every retry");
        let record = lock.record().expect("a lease");
        assert_eq!((record.holder.as_str(), record.transitions), (first[0].as_str(), 0));
        let view = replicas[0].0.leadership();
        assert_eq!(view.leader.as_deref(), Some(first[0].as_str()), "every replica knows who leads");
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_leader_is_replaced_after_the_lease_and_before_lease_plus_retry() {
        let lock = Arc::new(MemoryLock::default());
        let mut replicas = electors(&lock, &["a", "b"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let leader = replicas.iter().position(|(elector, _)| elector.leads()).expect("a leader");
        let (_, task) = replicas.remove(leader);
        task.abort();
        let killed = tokio::time::Instant::now();
        // The last renewal was at most a retry ago; the other takes over `lease` after it saw that renewal.
        while !replicas[0].0.leads() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(killed.elapsed() < Duration::from_secs(18), "no takeover within lease + retry");
        }
        assert!(
            killed.elapsed() >= Duration::from_secs(13),
            "took over after {:?}: before the lease lapsed",
            killed.elapsed()
        );
        assert_eq!(lock.record().expect("lease").transitions, 1, "one hand-over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_writing_before_another_may_take_over() {
        let lock = Arc::new(MemoryLock::default());
        let replicas = electors(&lock, &["a"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (leader, _task) = &replicas[0];
        assert!(leader.leads());
        use crate::backend::fenced::Fence;
        assert!(leader.check().is_ok());
        lock.unreachable(true);
        let cut = tokio::time::Instant::now();
        while leader.leads() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stopped = cut.elapsed();
        assert!(stopped <= Duration::from_secs(10), "kept writing {stopped:?} without a renewal");
        assert!(stopped >= Duration::from_secs(8), "stopped after {stopped:?}: renewals within the deadline count");
        let refused = leader.check().expect_err("the fence is closed");
        assert!(refused.contains("lapsed"), "{refused}");
        assert!(leader.leadership().error.is_some_and(|error| error.contains("unreachable")));
        lock.unreachable(false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(leader.leads(), "a lock that answers again gives the lease back to its holder");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_leader_gives_the_lease_up_and_another_takes_it_within_a_retry() {
        let lock = Arc::new(MemoryLock::default());
        let first = Elector::new(Arc::clone(&lock) as Arc<dyn LeaseLock>, "a".to_owned(), Timings::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = Arc::clone(&first);
        let task = tokio::spawn(async move {
            running
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(first.leads());
        let replicas = electors(&lock, &["b"]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!replicas[0].0.leads(), "b waits while a renews");
        let _ = stop.send(());
        task.await.expect("a stops");
        assert!(!first.leads());
        let given_up = tokio::time::Instant::now();
        while !replicas[0].0.leads() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(given_up.elapsed() <= Duration::from_millis(2100), "took {:?}", given_up.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_not_taken_over_by_its_renew_time_but_by_what_the_candidate_saw_change() {
        // The holder's clock is an hour behind: its renew times look stale, yet it renews, so it keeps the lease.
        let lock = Arc::new(MemoryLock::default());
        let stale = LeaseRecord {
            holder: "slow-clock".to_owned(),
            acquired_ms: 0,
            renewed_ms: 0,
            duration_ms: 15_000,
            transitions: 0,
        };
        lock.write(None, &stale).await.expect("written");
        let replicas = electors(&lock, &["b"]);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (record, version) = lock.read().await.expect("read").expect("lease");
            if record.holder == "slow-clock" {
                lock.write(Some(&version), &LeaseRecord { renewed_ms: record.renewed_ms + 1, ..record })
                    .await
                    .expect("renewed");
            }
        }
        assert!(!replicas[0].0.leads(), "a renewed lease is never taken, however old its times look");
        tokio::time::sleep(Duration::from_secs(18)).await;
        assert!(replicas[0].0.leads(), "once the holder stopped renewing, it is taken");
    }
}
