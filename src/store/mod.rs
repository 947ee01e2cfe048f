//! What the daemon remembers: sync history, webhook deliveries and their ids, pins, scaling rule times, autoscaler
//! decisions, the environments list, placements, the secret-digest key, the leader's lease, requests queued for the
//! leader and the status it publishes. Two engines behind one trait: SQLite under the state directory (the embedded
//! default for one host) and PostgreSQL (shared by several replicas). Versioned migrations; nothing secret is ever
//! written (plans and diffs arrive redacted).

mod group_commit;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use group_commit::{GroupCommit, MOST_IN_ONE_COMMIT};
pub use postgres::PostgresEngine;
pub use sqlite::SqliteDb;

use crate::backend::JobRun;
use crate::model::job::KeepRuns;
use crate::outcome::{SyncOutcome, Trigger};

/// Rows per page of history.
pub const PAGE_SIZE: u32 = 20;

/// Unauthenticated webhook deliveries kept (the newest); the metrics count them all.
pub const KEEP_UNAUTHENTICATED: u32 = 100;

/// The database's file name in the state directory.
pub const DATABASE_FILE: &str = "railyard.db";

/// How long a signed delivery's id is remembered: a replay within it is answered "duplicate" and triggers nothing.
pub const DELIVERY_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}; check that --state-dir is writable")]
    Open { path: String, source: rusqlite::Error },
    #[error(
        "the state database {path} was written by a newer railyard (schema {found}, this one knows {known}); upgrade railyard"
    )]
    TooNew { path: String, found: usize, known: usize },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the state database's worker thread failed: {0}")]
    Worker(String),
    #[error("invalid --store `{given}`: {why}; use sqlite:PATH or postgres://USER@HOST[:PORT]/DATABASE")]
    Location { given: String, why: String },
    #[error(
        "cannot reach the PostgreSQL store {location}: {reason}; check that the server runs, that the address is right and that it accepts this user and password"
    )]
    PostgresUnavailable { location: String, reason: String },
    #[error("the PostgreSQL store {location} refused a query: {reason}")]
    Postgres { location: String, reason: String },
    /// The failure of a transaction that several requests' writes were part of (see [`GroupCommit`]).
    #[error("{0}")]
    Shared(Arc<StoreError>),
    #[error(
        "the store {location} already holds data (table {table} is not empty); `railyard store migrate` copies into an empty store only, so that nothing is overwritten: point --to at a new database or directory"
    )]
    NotEmpty { location: String, table: String },
}

impl StoreError {
    /// True when the database could not be reached (rather than refusing what was asked): the daemon then waits for
    /// it instead of reconciling without being able to record.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Shared(error) => error.is_unavailable(),
            error => {
                matches!(
                    error,
                    StoreError::Open { .. } | StoreError::Worker(_) | StoreError::PostgresUnavailable { .. }
                )
            }
        }
    }
}

/// One reconcile that changed something, failed, or found a commit invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub id: i64,
    pub env: String,
    pub commit_sha: Option<String>,
    pub commit_summary: Option<String>,
    pub trigger: Trigger,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub outcome: SyncOutcome,
    /// The plan's summary line.
    pub summary: String,
    /// The redacted diffs of the plan.
    pub diff: String,
    pub error: Option<String>,
    /// The newest lines of the sync's image builds, each headed by its app (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_output: String,
}

/// One webhook request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub received_ms: i64,
    pub forge: String,
    pub event: String,
    pub accepted: bool,
    pub reason: String,
    /// False when the signature or token was missing or wrong: anybody could have sent it.
    #[serde(default = "authenticated_by_default")]
    pub authenticated: bool,
}

fn authenticated_by_default() -> bool {
    true
}

/// One store write of a webhook delivery. Concurrent deliveries' writes are committed together, in one transaction
/// ([`StoreEngine::write_delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryWrite {
    /// Remembers the keys of a signed delivery of `forge` (its id, its body's digest) at `now_ms`, every one of them;
    /// answers true when none was seen within [`DELIVERY_MEMORY_MS`]. Otherwise it is a replay, or the forge sending
    /// it again, and `if_seen` (the duplicate's row) is recorded in the same transaction. Only for a verified
    /// signature: an unsigned request must not be able to burn an id.
    Remember { forge: String, keys: Vec<String>, now_ms: i64, if_seen: Option<DeliveryRecord> },
    /// Records a delivery in the history (answers true).
    Record(DeliveryRecord),
}

/// A delivery for the history: of its kind, authenticated or not, the newest `keep` are kept, and of unauthenticated
/// ones (which anybody can send) never more than [`KEEP_UNAUTHENTICATED`], so that a flood cannot fill the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery: Delivery,
    pub keep: u32,
}

impl DeliveryRecord {
    /// How many rows of its kind the history keeps once it is recorded.
    pub fn kept(&self) -> u32 {
        if self.delivery.authenticated { self.keep.max(1) } else { KEEP_UNAUTHENTICATED }
    }
}

impl DeliveryWrite {
    /// The row this write adds to the history, given its answer.
    pub fn recorded(&self, answer: bool) -> Option<&DeliveryRecord> {
        match self {
            DeliveryWrite::Remember { if_seen, .. } => if_seen.as_ref().filter(|_| !answer),
            DeliveryWrite::Record(record) => Some(record),
        }
    }
}

/// A page of rows and whether more follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub page: u32,
    pub items: Vec<T>,
    pub has_more: bool,
}

/// An environment the daemon ran, remembered so that one removed from the list while railyard was down is still
/// torn down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEnvironment {
    pub name: String,
    /// The compose project or namespace it ran as; empty when it never ran.
    pub project: String,
    pub branch: String,
}

/// A leader's lease as a lock keeps it (in the store, or in a Kubernetes Lease): who holds it, since when, until when
/// it counts, and how many times it changed hands. `version` is the lock's own: a write that names an older one loses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub holder: String,
    pub acquired_ms: i64,
    pub renewed_ms: i64,
    pub duration_ms: i64,
    /// Hand-overs so far: with the holder, it names the term a write happened in.
    pub transitions: i64,
}

/// Work that any replica takes (a webhook, the API) and the leader does: queued in the store so that none is lost
/// whichever replica a load balancer picked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Request {
    /// A push to `branch`: the environments that follow it reconcile.
    Pushed { branch: String },
    /// A sync of environment `env` asked for (the API, the page's button, a rollback or an unpin); `destroy` when
    /// whoever asked may destroy it (it may have been removed from the list).
    Sync {
        env: String,
        trigger: Trigger,
        #[serde(default)]
        destroy: bool,
    },
    /// A pull request event taken from a forge's webhook (signature checked).
    PullRequest { action: crate::previews::PullRequestAction, pr: crate::previews::PullRequest },
}

/// The status of one environment as the leader last published it, for the replicas that do not lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedStatus {
    pub env: String,
    /// JSON, written and read by the daemon.
    pub body: String,
    pub published_ms: i64,
}

/// Everything a store holds, row for row (ids kept), for `railyard store migrate`: read from one engine by
/// [`StoreEngine::dump`] and written into another by [`StoreEngine::load`]. Each list is in its table's order (ids
/// or keys ascending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreDump {
    pub syncs: Vec<SyncRecord>,
    pub deliveries: Vec<DumpedDelivery>,
    pub environments: Vec<KnownEnvironment>,
    pub scaling_rules: Vec<DumpedScalingRule>,
    pub autoscale_decisions: Vec<DumpedAutoscaleDecision>,
    /// Each open pull request as its stored JSON body (kept as written, even one that no longer reads).
    pub pull_requests: Vec<(i64, String)>,
    pub pins: Vec<DumpedPin>,
    pub delivery_ids: Vec<DumpedDeliveryId>,
    /// Each environment's target as its stored JSON, and since when.
    pub placements: Vec<DumpedPlacement>,
    /// Named keys such as the secret-digest key.
    pub shared_keys: Vec<(String, Vec<u8>)>,
    pub leases: Vec<DumpedLease>,
    pub requests: Vec<DumpedRequest>,
    pub statuses: Vec<PublishedStatus>,
    pub job_runs: Vec<StoredJobRun>,
    /// `(env, key, seen_ms)` of every run the platform started by itself that was recorded.
    pub job_run_keys: Vec<(String, String, i64)>,
    pub audit: Vec<StoredAudit>,
}

impl StoreDump {
    /// Rows in all, for the command's report.
    pub fn rows(&self) -> usize {
        self.syncs.len()
            + self.deliveries.len()
            + self.environments.len()
            + self.scaling_rules.len()
            + self.autoscale_decisions.len()
            + self.pull_requests.len()
            + self.pins.len()
            + self.delivery_ids.len()
            + self.placements.len()
            + self.shared_keys.len()
            + self.leases.len()
            + self.requests.len()
            + self.statuses.len()
            + self.job_runs.len()
            + self.job_run_keys.len()
            + self.audit.len()
    }
}

/// The tables [`StoreEngine::load`] checks are empty before it writes, by their SQL names (both engines use them).
pub const TABLES: &[&str] = &[
    "syncs",
    "webhook_deliveries",
    "environments",
    "scaling_rules",
    "autoscale_decisions",
    "pull_requests",
    "pins",
    "webhook_delivery_ids",
    "placements",
    "shared_keys",
    "leases",
    "requests",
    "statuses",
    "job_runs",
    "job_run_keys",
    "audit",
];

/// Refused or unauthenticated attempts kept in the audit trail (the newest), so that a flood, with a token or without,
/// cannot fill the disk.
pub const KEEP_AUDIT_ATTEMPTS: u32 = 1000;

/// What became of a request in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// Done or queued.
    Accepted,
    /// Not allowed: no token, a wrong one, or one outside its scope.
    Refused,
    /// Allowed, but it could not be done (no such environment, the store down, a rollback refused...).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Accepted => "accepted",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// One request that asked railyard to change something (or was refused): who, when, from where, what, and what came
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub at_ms: i64,
    /// The token's name, the forge of a webhook delivery, or `anonymous` (no token, or a wrong one).
    pub who: String,
    /// A webhook delivery's id, as the forge sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// False for a missing or wrong credential: anybody could have sent it.
    pub authenticated: bool,
    /// The peer's address (and what `X-Forwarded-For` claimed, when the peer is a proxy on loopback).
    pub address: Option<String>,
    /// sync, destroy, rollback, unpin, run, read, push, pull_request.
    pub action: String,
    pub env: Option<String>,
    /// What was asked, in words ("rollback production to 3f2a1bc (force)").
    pub asked: String,
    pub outcome: AuditOutcome,
    /// The HTTP status answered.
    pub status: u16,
    /// What came of it, or why it was refused.
    pub detail: String,
}

impl AuditEntry {
    /// A refused or unauthenticated attempt: only the newest [`KEEP_AUDIT_ATTEMPTS`] of them are kept.
    pub fn is_attempt(&self) -> bool {
        !self.authenticated || self.outcome == AuditOutcome::Refused
    }
}

/// A recorded audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAudit {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl StoredAudit {
    /// A stored row back; `None` for a body this version cannot read.
    pub fn read(id: i64, body: &str) -> Option<StoredAudit> {
        serde_json::from_str(body).ok().map(|entry| StoredAudit { id, entry })
    }

    /// The entry as its stored JSON body.
    pub fn body(entry: &AuditEntry) -> String {
        serde_json::to_string(entry).unwrap_or_default()
    }
}

/// Which audit entries to read; each field given narrows by equality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuditFilter {
    pub who: Option<String>,
    pub env: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
}

/// How long the key of a run the platform started is remembered after it finished: longer than any cluster keeps its
/// finished Jobs, so that one whose record retention dropped is not recorded again.
pub const RUN_KEY_MEMORY_MS: i64 = 30 * 24 * 3600 * 1000;

/// A recorded run of a Job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredJobRun {
    pub id: i64,
    #[serde(flatten)]
    pub run: JobRun,
}

impl StoredJobRun {
    /// The run's row as stored: the class retention keeps apart (`succeeded`, `failed`, or `skipped`, which never
    /// pushes a real failure out), the schedule's time, and the run itself.
    pub fn columns(run: &JobRun) -> (&'static str, Option<i64>, String) {
        let scheduled = match run.trigger {
            crate::backend::JobTrigger::Schedule { at } => Some(at),
            _ => None,
        };
        let class = match run.outcome {
            crate::backend::JobOutcome::Succeeded => "succeeded",
            crate::backend::JobOutcome::Skipped { .. } => "skipped",
            crate::backend::JobOutcome::Failed { .. } | crate::backend::JobOutcome::TimedOut { .. } => "failed",
        };
        (class, scheduled, serde_json::to_string(run).unwrap_or_default())
    }

    /// How many runs of `class` a Job keeps: skipped ones as many as failed ones, apart from them.
    pub fn kept(class: &str, keep: KeepRuns) -> u32 {
        if class == "succeeded" { keep.succeeded } else { keep.failed }.max(1)
    }

    /// A stored row back; `None` for a body this version cannot read.
    pub fn read(id: i64, body: &str) -> Option<StoredJobRun> {
        serde_json::from_str(body).ok().map(|run| StoredJobRun { id, run })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedDelivery {
    pub id: i64,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedScalingRule {
    pub env: String,
    pub app: String,
    pub appeared_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedAutoscaleDecision {
    pub env: String,
    pub app: String,
    pub replicas: i64,
    pub decided_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedPin {
    pub env: String,
    pub commit_sha: String,
    pub pinned_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedDeliveryId {
    pub forge: String,
    pub delivery: String,
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedPlacement {
    pub env: String,
    pub target: String,
    pub placed_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedLease {
    pub name: String,
    pub record: LeaseRecord,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRequest {
    pub id: i64,
    /// The request as its stored JSON.
    pub body: String,
    pub requested_ms: i64,
}

/// One engine of the store. Every call is async: SQLite's run on blocking threads, PostgreSQL's on the driver.
#[async_trait]
pub trait StoreEngine: Send + Sync {
    /// Whether the database answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The environments of the last run, in their order.
    async fn known_environments(&self) -> Result<Vec<KnownEnvironment>, StoreError>;
    /// Replaces the remembered environments.
    async fn remember_environments(&self, environments: &[KnownEnvironment]) -> Result<(), StoreError>;
    /// Forgets an environment that was destroyed (and where it ran).
    async fn forget_environment(&self, name: &str) -> Result<(), StoreError>;

    /// Replaces the remembered open pull requests.
    async fn remember_pull_requests(&self, open: &[crate::previews::PullRequest]) -> Result<(), StoreError>;
    /// The open pull requests remembered; rows that no longer read are left out.
    async fn pull_requests(&self) -> Result<Vec<crate::previews::PullRequest>, StoreError>;

    /// Pins `env` to commit `sha` (a rollback): it runs that commit and does not follow its branch until unpinned.
    async fn pin(&self, env: &str, sha: &str, now_ms: i64) -> Result<(), StoreError>;
    async fn unpin(&self, env: &str) -> Result<(), StoreError>;
    /// The commit `env` is pinned to, and since when.
    async fn pin_of(&self, env: &str) -> Result<Option<(String, i64)>, StoreError>;
    /// The full sha of a commit starting with `prefix` that `env` once synced successfully.
    async fn synced_commit(&self, env: &str, prefix: &str) -> Result<Option<String>, StoreError>;

    /// Records that `env` runs on `target` now.
    async fn place(&self, env: &str, target: &crate::targets::Target, now_ms: i64) -> Result<(), StoreError>;
    /// Where `env` last ran, when known (a row that no longer reads as a target is not).
    async fn placement(&self, env: &str) -> Result<Option<crate::targets::Target>, StoreError>;

    /// Since when each of `apps` has had a ScalingRule in `env` (now for those seen for the first time); apps of
    /// `env` not named lose their record, so that a rule added again later starts afresh.
    async fn scaling_rules_appeared(
        &self,
        env: &str,
        apps: &[String],
        now_ms: i64,
    ) -> Result<BTreeMap<String, i64>, StoreError>;
    /// The replicas the CPU autoscaler last decided for each of `apps` in `env`; decisions for apps of `env` not
    /// named (their rule lost its CPU target or went) are dropped.
    async fn autoscale_decisions(&self, env: &str, apps: &[String]) -> Result<BTreeMap<String, u32>, StoreError>;
    /// Remembers the CPU autoscaler's decision for `app`, so that a restart or a git sync does not undo it.
    async fn record_autoscale_decision(
        &self,
        env: &str,
        app: &str,
        replicas: u32,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Records a sync and drops the oldest of its environment beyond `keep` (at least one is always kept).
    async fn record_sync(&self, record: &SyncRecord, keep: u32) -> Result<i64, StoreError>;
    /// Newest first; `env` filters.
    async fn syncs(&self, env: Option<&str>, page: u32) -> Result<Page<SyncRecord>, StoreError>;
    async fn sync(&self, id: i64) -> Result<Option<SyncRecord>, StoreError>;

    /// Does `writes` in order, in one transaction (all or none), and answers each (see [`DeliveryWrite`]). Ids
    /// past their day are forgotten here, and the history trimmed, once for all of them.
    async fn write_deliveries(&self, writes: Vec<DeliveryWrite>) -> Result<Vec<bool>, StoreError>;
    /// Does `write` together with the other requests' writes waiting when the engine's writer is free (one
    /// transaction for all of them: see [`GroupCommit`]) and answers it; when that transaction fails, each of its
    /// writes fails.
    async fn write_delivery(&self, write: DeliveryWrite) -> Result<bool, StoreError>;
    /// Records a delivery and drops the oldest beyond `keep` (see [`DeliveryRecord`]).
    async fn record_delivery(&self, delivery: &Delivery, keep: u32) -> Result<(), StoreError> {
        self.write_delivery(DeliveryWrite::Record(DeliveryRecord { delivery: delivery.clone(), keep })).await.map(drop)
    }
    /// Newest first.
    async fn deliveries(&self, page: u32) -> Result<Page<Delivery>, StoreError>;
    /// Remembers the signed delivery `delivery` of `forge` at `now_ms`; false when it was seen within
    /// [`DELIVERY_MEMORY_MS`] (see [`DeliveryWrite::Remember`]).
    async fn first_delivery(&self, forge: &str, delivery: &str, now_ms: i64) -> Result<bool, StoreError> {
        let keys = vec![delivery.to_owned()];
        self.write_delivery(DeliveryWrite::Remember { forge: forge.to_owned(), keys, now_ms, if_seen: None }).await
    }

    /// The installation's secret-digest key: the one stored, or `candidate` stored now when there is none, so that
    /// every replica computes the same digests.
    async fn digest_key(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError>;

    /// The lease called `name`, with its version, when there is one.
    async fn lease(&self, name: &str) -> Result<Option<(LeaseRecord, i64)>, StoreError>;
    /// Writes lease `name` if its version is still `expected` (`None`: if there is none yet); false when another
    /// write came first. The new version is `expected + 1` (1 for a new lease).
    async fn swap_lease(&self, name: &str, expected: Option<i64>, record: &LeaseRecord) -> Result<bool, StoreError>;

    /// Queues a request for the leader.
    async fn request(&self, request: &Request, now_ms: i64) -> Result<(), StoreError>;
    /// Takes every queued request, oldest first (each is taken by one caller only).
    async fn take_requests(&self) -> Result<Vec<Request>, StoreError>;

    /// Publishes the status of `env` (replacing the last one).
    async fn publish_status(&self, env: &str, body: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Every environment's last published status.
    async fn published_statuses(&self) -> Result<Vec<PublishedStatus>, StoreError>;
    /// Removes the published status of environments not in `keep`.
    async fn retain_statuses(&self, keep: &[String]) -> Result<(), StoreError>;

    /// Records a finished run of a Job and keeps, of that Job's runs, the newest `keep.succeeded` that succeeded, the
    /// newest `keep.failed` that failed and as many skipped ones (at least one of each), and always the newest run
    /// its schedule started, so that the last schedule stays known. A run with a [`JobRun::key`] already recorded is
    /// not recorded again (`None`). Returns the run's id.
    async fn record_job_run(&self, run: &JobRun, keep: KeepRuns) -> Result<Option<i64>, StoreError>;
    /// The keys of the runs the platform started by itself that `env` recorded in the last [`RUN_KEY_MEMORY_MS`]
    /// (kept apart from the runs, which retention drops sooner).
    async fn job_run_keys(&self, env: &str) -> Result<std::collections::BTreeSet<String>, StoreError>;
    /// Runs of `env` (of `job` only, when given), newest first, at most `limit`.
    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<StoredJobRun>, StoreError>;
    async fn job_run(&self, id: i64) -> Result<Option<StoredJobRun>, StoreError>;
    /// When `job`'s schedule last fired in `env` (unix milliseconds), for at most one catch-up run after a pause.
    async fn last_scheduled(&self, env: &str, job: &str) -> Result<Option<i64>, StoreError>;

    /// Records an audit entry; drops entries older than `keep_ms` before it, and keeps only the newest
    /// [`KEEP_AUDIT_ATTEMPTS`] refused or unauthenticated attempts.
    async fn record_audit(&self, entry: &AuditEntry, keep_ms: i64) -> Result<(), StoreError>;
    /// A page of audit entries, newest first.
    async fn audit(&self, filter: &AuditFilter, page: u32) -> Result<Page<StoredAudit>, StoreError>;

    /// Every row of every table, in one consistent read.
    async fn dump(&self) -> Result<StoreDump, StoreError>;
    /// Writes `dump` into this store, all or nothing; refused with [`StoreError::NotEmpty`] when any table holds a
    /// row already (nothing is overwritten or merged).
    async fn load(&self, dump: &StoreDump) -> Result<(), StoreError>;
}

/// Where the store lives, as `--store` names it. Its `Debug` hides a password too (it is [`StoreLocation::shown`]).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The database file [`DATABASE_FILE`] in this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://` or `postgresql://`, libpq's keywords such as `sslmode`).
    Postgres(String),
}

impl StoreLocation {
    /// `sqlite:PATH` (a directory), `postgres://…`; `None` when nothing was given (the state directory's SQLite).
    pub fn parse(given: &str) -> Result<StoreLocation, StoreError> {
        let refuse = |why: &str| StoreError::Location { given: hide_password(given), why: why.to_owned() };
        if let Some(path) = given.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(refuse("the path after `sqlite:` is empty"));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if given.starts_with("postgres://") || given.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(given.to_owned()));
        }
        Err(refuse("it names no engine"))
    }

    /// The location as it may be shown: a password written in the URL is hidden.
    pub fn shown(&self) -> String {
        match self {
            StoreLocation::Sqlite(dir) => format!("sqlite:{}", dir.display()),
            StoreLocation::Postgres(url) => hide_password(url),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(dir) => formatter.debug_tuple("Sqlite").field(dir).finish(),
            StoreLocation::Postgres(url) => formatter.debug_tuple("Postgres").field(&hide_password(url)).finish(),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
/// A password typed unescaped may hold `/`, `?` or `#`, so the credentials end at the last `@`; a `password=` in
/// the query (libpq takes one there too) is hidden as well.
pub fn hide_password(url: &str) -> String {
    // Without `://` (a mistyped URL), whatever stands between the first `:` and the last `@` may be a password.
    let Some((scheme, rest)) = url.split_once("://") else {
        return match (url.split_once(':'), url.rfind('@')) {
            (Some((head, _)), Some(at)) if head.len() < at => format!("{head}:***{}", &url[at..]),
            _ => url.to_owned(),
        };
    };
    let rest = match rest.rsplit_once('@') {
        Some((credentials, tail)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{tail}"),
            None => format!("{credentials}@{tail}"),
        },
        None => rest.to_owned(),
    };
    let Some((before, query)) = rest.split_once('?') else { return format!("{scheme}://{rest}") };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{before}?{}", query.join("&"))
}

/// The store the daemon, the server and the CLI share: one engine behind [`StoreEngine`], whose methods it offers.
pub struct Store {
    engine: Box<dyn StoreEngine>,
    location: StoreLocation,
}

/// Shows where the store lives (its password hidden), not the engine's inside.
impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Store").field("location", &self.location).finish_non_exhaustive()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn StoreEngine;

    fn deref(&self) -> &Self::Target {
        self.engine.as_ref()
    }
}

impl Store {
    /// The SQLite store in `dir` (created and migrated).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = SqliteDb::open(dir)?;
        let location = StoreLocation::Sqlite(dir.into());
        Ok(Store { engine: Box::new(sqlite::SqliteEngine::new(Arc::new(db), location.shown())), location })
    }

    /// The store at `location`, connected and migrated. `password` (from `--store-password-file`) is PostgreSQL's
    /// when its URL has none; without either, `PGPASSWORD` is read, as libpq does. SQLite ignores it.
    pub async fn connect(location: &StoreLocation, password: Option<String>) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || Store::open(&dir))
                    .await
                    .map_err(|error| StoreError::Worker(error.to_string()))?
            }
            StoreLocation::Postgres(url) => {
                let engine = PostgresEngine::connect(url, password).await?;
                Ok(Store { engine: Box::new(engine), location: location.clone() })
            }
        }
    }

    /// Where this store lives (a password hidden).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_location_names_its_engine_or_is_refused() {
        assert_eq!(
            StoreLocation::parse("sqlite:/var/lib/railyard").ok(),
            Some(StoreLocation::Sqlite("/var/lib/railyard".into()))
        );
        let url = "postgresql://railyard@db:5432/railyard?sslmode=require";
        assert_eq!(StoreLocation::parse(url).ok(), Some(StoreLocation::Postgres(url.to_owned())));
        for refused in ["sqlite:", "mysql://db/railyard", "/var/lib/railyard", ""] {
            let error = StoreLocation::parse(refused).err().map(|error| error.to_string()).unwrap_or_default();
            assert!(error.contains("use sqlite:PATH or postgres://"), "{refused:?}: {error}");
        }
    }

    #[test]
    fn a_password_never_shows_however_it_is_written() {
        let canary = "s3cr3t/pa?ss#w@rd";
        for url in [
            format!("postgres://railyard:{canary}@db:5432/railyard"),
            format!("postgres://railyard:{canary}@db"),
            format!("postgres://db/railyard?sslmode=require&password={canary}"),
            format!("postgres://railyard:{canary}@db/railyard?PASSWORD={canary}"),
            format!("postgresql+psycopg://railyard:{canary}@db/railyard"),
            format!("postgres:/railyard:{canary}@db/railyard"),
        ] {
            let shown = hide_password(&url);
            assert!(!shown.contains("s3cr3t"), "{url} shows as {shown}");
        }
        assert_eq!(hide_password("postgres://railyard@db/railyard"), "postgres://railyard@db/railyard");
        assert_eq!(
            hide_password("postgres://railyard:pw@db/railyard?sslmode=require"),
            "postgres://railyard:***@db/railyard?sslmode=require"
        );
        for mistyped in [format!("pgsql://railyard:{canary}@db/x"), format!("postgres:/railyard:{canary}@db")] {
            let refused = StoreLocation::parse(&mistyped).err().map(|error| error.to_string()).unwrap_or_default();
            assert!(!refused.is_empty() && !refused.contains("s3cr3t"), "{refused}");
        }
        let location = StoreLocation::Postgres(format!("postgres://railyard:{canary}@db/railyard"));
        assert!(!location.shown().contains("s3cr3t") && !format!("{location:?}").contains("s3cr3t"));
    }
}
