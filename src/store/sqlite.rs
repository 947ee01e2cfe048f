//! The store in SQLite under the state directory: the embedded default for one host. Calls run on Tokio's blocking
//! threads, never on the runtime's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use crate::backend::JobRun;
use crate::model::job::KeepRuns;
use crate::outcome::{SyncOutcome, Trigger};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::{AuditEntry, AuditFilter, GroupCommit, KEEP_AUDIT_ATTEMPTS, StoredAudit};
use super::{
    DATABASE_FILE, DELIVERY_MEMORY_MS, Delivery, DeliveryRecord, DeliveryWrite, DumpedAutoscaleDecision,
    DumpedDelivery, DumpedDeliveryId, DumpedLease, DumpedPin, DumpedPlacement, DumpedRequest, DumpedScalingRule,
    KnownEnvironment, LeaseRecord, PAGE_SIZE, Page, PublishedStatus, RUN_KEY_MEMORY_MS, Request, StoreDump,
    StoreEngine, StoreError, StoredJobRun, SyncRecord, TABLES,
};

/// Each entry moves the schema one version up; applied in order, once.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE syncs (
        id INTEGER PRIMARY KEY,
        env TEXT NOT NULL,
        commit_sha TEXT,
        commit_summary TEXT,
        trigger TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        summary TEXT NOT NULL,
        diff TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX syncs_by_env ON syncs (env, id DESC);
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        forge TEXT NOT NULL,
        event TEXT NOT NULL,
        accepted INTEGER NOT NULL,
        reason TEXT NOT NULL
    );",
    "ALTER TABLE webhook_deliveries ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX deliveries_by_authentication ON webhook_deliveries (authenticated, id DESC);",
    "CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        branch TEXT NOT NULL,
        position INTEGER NOT NULL
    );",
    "CREATE TABLE scaling_rules (
        env TEXT NOT NULL,
        app TEXT NOT NULL,
        appeared_ms INTEGER NOT NULL,
        PRIMARY KEY (env, app)
    );",
    "CREATE TABLE autoscale_decisions (
        env TEXT NOT NULL,
        app TEXT NOT NULL,
        replicas INTEGER NOT NULL,
        decided_ms INTEGER NOT NULL,
        PRIMARY KEY (env, app)
    );",
    "CREATE TABLE pull_requests (
        number INTEGER PRIMARY KEY,
        body TEXT NOT NULL
    );",
    "CREATE TABLE pins (
        env TEXT PRIMARY KEY,
        commit_sha TEXT NOT NULL,
        pinned_ms INTEGER NOT NULL
    );",
    "CREATE TABLE webhook_delivery_ids (
        forge TEXT NOT NULL,
        delivery TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (forge, delivery)
    );
    CREATE INDEX delivery_ids_by_time ON webhook_delivery_ids (received_ms);",
    // Triggers and outcomes become the words of crate::outcome, checked by the schema; an older word (`error`)
    // reads as `failed`.
    "CREATE TABLE syncs_typed (
        id INTEGER PRIMARY KEY,
        env TEXT NOT NULL,
        commit_sha TEXT,
        commit_summary TEXT,
        trigger TEXT NOT NULL CHECK (trigger IN ('startup', 'poll', 'webhook', 'api', 'drift', 'retry', 'removed',
            'schedule', 'autoscale', 'panic')),
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('synced', 'failed', 'rolled-back', 'pending', 'invalid',
            'interrupted', 'destroyed')),
        summary TEXT NOT NULL,
        diff TEXT NOT NULL,
        error TEXT
    );
    INSERT INTO syncs_typed
        SELECT id, env, commit_sha, commit_summary,
            CASE WHEN trigger IN ('startup', 'poll', 'webhook', 'api', 'drift', 'retry', 'removed', 'schedule',
                'autoscale', 'panic') THEN trigger ELSE 'poll' END,
            started_ms, finished_ms,
            CASE WHEN outcome IN ('synced', 'failed', 'rolled-back', 'pending', 'invalid', 'interrupted', 'destroyed')
                THEN outcome ELSE 'failed' END,
            summary, diff, error
        FROM syncs;
    DROP TABLE syncs;
    ALTER TABLE syncs_typed RENAME TO syncs;
    CREATE INDEX syncs_by_env ON syncs (env, id DESC);",
    // A rollback is a trigger of its own (it was recorded as `api`, like a manual sync).
    "CREATE TABLE syncs_typed (
        id INTEGER PRIMARY KEY,
        env TEXT NOT NULL,
        commit_sha TEXT,
        commit_summary TEXT,
        trigger TEXT NOT NULL CHECK (trigger IN ('startup', 'poll', 'webhook', 'api', 'rollback', 'drift', 'retry',
            'removed', 'schedule', 'autoscale', 'panic')),
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('synced', 'failed', 'rolled-back', 'pending', 'invalid',
            'interrupted', 'destroyed')),
        summary TEXT NOT NULL,
        diff TEXT NOT NULL,
        error TEXT
    );
    INSERT INTO syncs_typed SELECT * FROM syncs;
    DROP TABLE syncs;
    ALTER TABLE syncs_typed RENAME TO syncs;
    CREATE INDEX syncs_by_env ON syncs (env, id DESC);",
    // Where each environment last ran (a target of the settings file, as JSON): a move is planned against it.
    "CREATE TABLE placements (
        env TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        placed_ms INTEGER NOT NULL
    );",
    // Several replicas (issue 25): the digest key they share, the leader's lease, the requests queued for it and the
    // status it publishes.
    "CREATE TABLE shared_keys (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        acquired_ms INTEGER NOT NULL,
        renewed_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        transitions INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        body TEXT NOT NULL,
        requested_ms INTEGER NOT NULL
    );
    CREATE TABLE statuses (
        env TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        published_ms INTEGER NOT NULL
    );",
    "CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY,
        env TEXT NOT NULL,
        job TEXT NOT NULL,
        class TEXT NOT NULL CHECK (class IN ('succeeded', 'failed', 'skipped')),
        scheduled_ms INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX job_runs_by_job ON job_runs (env, job, class, id);
    CREATE TABLE job_run_keys (
        env TEXT NOT NULL,
        run_key TEXT NOT NULL,
        seen_ms INTEGER NOT NULL,
        PRIMARY KEY (env, run_key)
    );",
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        who TEXT NOT NULL,
        authenticated INTEGER NOT NULL,
        env TEXT,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed')),
        body TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (at_ms);
    CREATE INDEX audit_attempts ON audit (id) WHERE authenticated = 0 OR outcome = 'refused';",
    "ALTER TABLE syncs ADD COLUMN build_output TEXT NOT NULL DEFAULT '';",
];

/// The database, called from blocking threads.
pub struct SqliteDb {
    connection: Mutex<Connection>,
    /// How many rows of each kind (unauthenticated, authenticated) the deliveries' history holds, as this handle
    /// last counted them: trimming it to what a batch keeps then deletes only the excess, oldest first, instead of
    /// walking the `keep` newest rows each time. Counted afresh now and then, in case another handle wrote.
    delivery_rows: Mutex<[Option<CountedRows>; 2]>,
}

/// Rows of one kind in the deliveries' history, and when they were last counted from the table itself.
#[derive(Debug, Clone, Copy)]
struct CountedRows {
    rows: u32,
    counted: std::time::Instant,
}

/// How long a count of the deliveries' rows is trusted before they are counted afresh.
const RECOUNT_DELIVERIES: std::time::Duration = std::time::Duration::from_secs(10);

impl SqliteDb {
    /// Opens (creating and migrating) [`DATABASE_FILE`] in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteDb, StoreError> {
        let path = dir.join(DATABASE_FILE);
        let open_error = |source| StoreError::Open { path: path.display().to_string(), source };
        let connection = Connection::open(&path).map_err(open_error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(open_error)?;
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_error)?;
        migrate(&connection, &path.display().to_string())?;
        Ok(SqliteDb { connection: Mutex::new(connection), delivery_rows: Mutex::new([None, None]) })
    }

    fn with<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let connection = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(work(&connection)?)
    }

    /// The environments of the last run, in their order.
    pub fn known_environments(&self) -> Result<Vec<KnownEnvironment>, StoreError> {
        self.with(|db| {
            let mut statement =
                db.prepare_cached("SELECT name, project, branch FROM environments ORDER BY position")?;
            statement
                .query_map([], |row| {
                    Ok(KnownEnvironment { name: row.get(0)?, project: row.get(1)?, branch: row.get(2)? })
                })?
                .collect()
        })
    }

    /// Replaces the remembered environments.
    pub fn remember_environments(&self, environments: &[KnownEnvironment]) -> Result<(), StoreError> {
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            transaction.execute("DELETE FROM environments", [])?;
            for (position, env) in environments.iter().enumerate() {
                transaction.execute(
                    "INSERT INTO environments (name, project, branch, position) VALUES (?1, ?2, ?3, ?4)",
                    params![env.name, env.project, env.branch, position as i64],
                )?;
            }
            transaction.commit()
        })
    }

    /// Replaces the remembered open pull requests.
    pub fn remember_pull_requests(&self, open: &[crate::previews::PullRequest]) -> Result<(), StoreError> {
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            transaction.execute("DELETE FROM pull_requests", [])?;
            for pr in open {
                let body = serde_json::to_string(pr)
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
                transaction.execute(
                    "INSERT INTO pull_requests (number, body) VALUES (?1, ?2)",
                    params![i64::try_from(pr.number).unwrap_or(i64::MAX), body],
                )?;
            }
            transaction.commit()
        })
    }

    /// The open pull requests remembered; rows that no longer read are left out.
    pub fn pull_requests(&self) -> Result<Vec<crate::previews::PullRequest>, StoreError> {
        self.with(|db| {
            let mut statement = db.prepare_cached("SELECT body FROM pull_requests ORDER BY number")?;
            let bodies: Vec<String> = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            Ok(bodies.iter().filter_map(|body| serde_json::from_str(body).ok()).collect())
        })
    }

    /// Pins `env` to commit `sha` (a rollback): it runs that commit and does not follow its branch until unpinned.
    pub fn pin(&self, env: &str, sha: &str, now_ms: i64) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO pins (env, commit_sha, pinned_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (env) DO UPDATE SET commit_sha = excluded.commit_sha, pinned_ms = excluded.pinned_ms",
                params![env, sha, now_ms],
            )
            .map(|_| ())
        })
    }

    pub fn unpin(&self, env: &str) -> Result<(), StoreError> {
        self.with(|db| db.execute("DELETE FROM pins WHERE env = ?1", params![env]).map(|_| ()))
    }

    /// The commit `env` is pinned to, and since when.
    pub fn pin_of(&self, env: &str) -> Result<Option<(String, i64)>, StoreError> {
        self.with(|db| {
            db.query_row("SELECT commit_sha, pinned_ms FROM pins WHERE env = ?1", params![env], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
    }

    /// The full sha of a commit starting with `prefix` that `env` once synced successfully.
    pub fn synced_commit(&self, env: &str, prefix: &str) -> Result<Option<String>, StoreError> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        self.with(|db| {
            db.query_row(
                "SELECT commit_sha FROM syncs WHERE env = ?1 AND outcome = ?3 AND commit_sha LIKE ?2 || '%'
                 ORDER BY id DESC LIMIT 1",
                params![env, prefix, SyncOutcome::Synced],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// Forgets an environment that was destroyed.
    pub fn forget_environment(&self, name: &str) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute("DELETE FROM environments WHERE name = ?1", params![name])?;
            db.execute("DELETE FROM placements WHERE env = ?1", params![name]).map(|_| ())
        })
    }

    /// Records that `env` runs on `target` now.
    pub fn place(&self, env: &str, target: &crate::targets::Target, now_ms: i64) -> Result<(), StoreError> {
        let target = serde_json::to_string(target).unwrap_or_default();
        self.with(|db| {
            db.execute(
                "INSERT INTO placements (env, target, placed_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (env) DO UPDATE SET target = excluded.target, placed_ms = excluded.placed_ms",
                params![env, target, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Where `env` last ran, when known (a row that no longer reads as a target is not).
    pub fn placement(&self, env: &str) -> Result<Option<crate::targets::Target>, StoreError> {
        let stored: Option<String> = self.with(|db| {
            db.query_row("SELECT target FROM placements WHERE env = ?1", params![env], |row| row.get(0)).optional()
        })?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Since when each of `apps` has had a ScalingRule in `env` (now for those seen for the first time); apps of
    /// `env` not named lose their record, so that a rule added again later starts afresh.
    pub fn scaling_rules_appeared(
        &self,
        env: &str,
        apps: &[String],
        now_ms: i64,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        self.with(|db| {
            let transaction = writing(db)?;
            let mut appeared: BTreeMap<String, i64> = per_app_keeping(&transaction, PerApp::ScalingRules, env, apps)?;
            let new: Vec<&String> = apps.iter().filter(|app| !appeared.contains_key(*app)).collect();
            for app in new {
                transaction.execute(
                    "INSERT INTO scaling_rules (env, app, appeared_ms) VALUES (?1, ?2, ?3)",
                    params![env, app, now_ms],
                )?;
                appeared.insert(app.clone(), now_ms);
            }
            transaction.commit()?;
            Ok(appeared)
        })
    }

    /// The replicas the CPU autoscaler last decided for each of `apps` in `env`; decisions for apps of `env` not
    /// named (their rule lost its CPU target or went) are dropped.
    pub fn autoscale_decisions(&self, env: &str, apps: &[String]) -> Result<BTreeMap<String, u32>, StoreError> {
        self.with(|db| {
            let transaction = writing(db)?;
            let decided = per_app_keeping(&transaction, PerApp::AutoscaleDecisions, env, apps)?;
            transaction.commit()?;
            Ok(decided)
        })
    }

    /// Remembers the CPU autoscaler's decision for `app`, so that a restart or a git sync does not undo it.
    pub fn record_autoscale_decision(
        &self,
        env: &str,
        app: &str,
        replicas: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO autoscale_decisions (env, app, replicas, decided_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (env, app) DO UPDATE SET replicas = excluded.replicas, decided_ms = excluded.decided_ms",
                params![env, app, replicas, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Records a sync and drops the oldest of its environment beyond `keep` (at least one is always kept).
    pub fn record_sync(&self, record: &SyncRecord, keep: u32) -> Result<i64, StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO syncs (env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error,
                     build_output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    record.env,
                    record.commit_sha,
                    record.commit_summary,
                    record.trigger,
                    record.started_ms,
                    record.finished_ms,
                    record.outcome,
                    record.summary,
                    record.diff,
                    record.error,
                    record.build_output
                ],
            )?;
            let id = db.last_insert_rowid();
            db.execute(
                "DELETE FROM syncs WHERE env = ?1 AND id <= (SELECT id FROM syncs WHERE env = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![record.env, i64::from(keep.max(1))],
            )?;
            Ok(id)
        })
    }

    /// Newest first; `env` filters.
    pub fn syncs(&self, env: Option<&str>, page: u32) -> Result<Page<SyncRecord>, StoreError> {
        self.with(|db| {
            read_page(
                db,
                "SELECT id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error,
                     build_output
                 FROM syncs WHERE (:env IS NULL OR env = :env) ORDER BY id DESC LIMIT :limit OFFSET :offset",
                &[(":env", &env)],
                page,
                row_to_sync,
            )
        })
    }

    pub fn sync(&self, id: i64) -> Result<Option<SyncRecord>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error,
                     build_output
                 FROM syncs WHERE id = ?1",
                [id],
                row_to_sync,
            )
            .optional()
        })
    }

    /// Records a delivery and drops the oldest beyond `keep`; of unauthenticated ones (which anybody can send) only
    /// the newest [`KEEP_UNAUTHENTICATED`](super::KEEP_UNAUTHENTICATED) are kept, so that a flood cannot fill the disk.
    pub fn record_delivery(&self, delivery: &Delivery, keep: u32) -> Result<(), StoreError> {
        self.write_deliveries(&[DeliveryWrite::Record(DeliveryRecord { delivery: delivery.clone(), keep })]).map(drop)
    }

    /// Remembers the signed delivery `delivery` of `forge` at `now_ms`; false when it was seen within
    /// [`DELIVERY_MEMORY_MS`] (a replay, or the forge sending it again). Ids older than that are forgotten here, so
    /// the table holds one day of deliveries at most. Only call this once the signature is verified: an unsigned
    /// request must not be able to burn an id.
    pub fn first_delivery(&self, forge: &str, delivery: &str, now_ms: i64) -> Result<bool, StoreError> {
        let keys = vec![delivery.to_owned()];
        let remember = DeliveryWrite::Remember { forge: forge.to_owned(), keys, now_ms, if_seen: None };
        Ok(self.write_deliveries(&[remember])?.first().copied().unwrap_or(false))
    }

    /// Does `writes` in order, in one transaction (all or none), and answers each (see [`DeliveryWrite`]). The
    /// history is trimmed to what the last record of each kind keeps, and ids past their day forgotten, once for
    /// all of them.
    pub fn write_deliveries(&self, writes: &[DeliveryWrite]) -> Result<Vec<bool>, StoreError> {
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            let mut answers = Vec::with_capacity(writes.len());
            // What the last record of each kind (unauthenticated, authenticated) keeps, how many of each were added,
            // and the newest time an id was remembered at.
            let mut kept: [Option<u32>; 2] = [None, None];
            let mut added = [0u32; 2];
            let mut newest_remembered = None;
            {
                let mut remember = transaction.prepare_cached(
                    "INSERT INTO webhook_delivery_ids (forge, delivery, received_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (forge, delivery) DO UPDATE SET received_ms = excluded.received_ms
                     WHERE webhook_delivery_ids.received_ms <= ?4",
                )?;
                let mut record = transaction.prepare_cached(
                    "INSERT INTO webhook_deliveries (received_ms, forge, event, accepted, reason, authenticated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for write in writes {
                    let answer = match write {
                        DeliveryWrite::Remember { forge, keys, now_ms, .. } => {
                            let forgotten_by = now_ms.saturating_sub(DELIVERY_MEMORY_MS);
                            let mut first = true;
                            for key in keys {
                                // A row is written when the key is new or was seen over a day ago.
                                first &= remember.execute(params![forge, key, now_ms, forgotten_by])? == 1;
                            }
                            newest_remembered = newest_remembered.max(Some(*now_ms));
                            first
                        }
                        DeliveryWrite::Record(_) => true,
                    };
                    if let Some(recorded) = write.recorded(answer) {
                        let delivery = &recorded.delivery;
                        record.execute(params![
                            delivery.received_ms,
                            delivery.forge,
                            delivery.event,
                            delivery.accepted,
                            delivery.reason,
                            delivery.authenticated
                        ])?;
                        kept[usize::from(delivery.authenticated)] = Some(recorded.kept());
                        added[usize::from(delivery.authenticated)] += 1;
                    }
                    answers.push(answer);
                }
            }
            let mut counted = *self.delivery_rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (kind, keep) in kept.into_iter().enumerate() {
                if let Some(keep) = keep {
                    counted[kind] = Some(trim_deliveries(&transaction, kind == 1, keep, added[kind], counted[kind])?);
                }
            }
            if let Some(now_ms) = newest_remembered {
                transaction
                    .prepare_cached("DELETE FROM webhook_delivery_ids WHERE received_ms <= ?1")?
                    .execute([now_ms.saturating_sub(DELIVERY_MEMORY_MS)])?;
            }
            transaction.commit()?;
            *self.delivery_rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = counted;
            Ok(answers)
        })
    }

    /// Writes the write-ahead log into the database file and truncates it (the WAL otherwise keeps its largest size).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.with(|db| db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
    }

    /// Newest first.
    pub fn deliveries(&self, page: u32) -> Result<Page<Delivery>, StoreError> {
        self.with(|db| {
            read_page(
                db,
                "SELECT received_ms, forge, event, accepted, reason, authenticated FROM webhook_deliveries
                 ORDER BY id DESC LIMIT :limit OFFSET :offset",
                &[],
                page,
                row_to_delivery,
            )
        })
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|db| db.query_row("SELECT 1", [], |_| Ok(())))
    }

    pub fn digest_key(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let stored: Vec<u8> = self.with(|db| {
            db.execute(
                "INSERT OR IGNORE INTO shared_keys (name, value) VALUES ('secret-digest', ?1)",
                params![candidate.as_slice()],
            )?;
            db.query_row("SELECT value FROM shared_keys WHERE name = 'secret-digest'", [], |row| row.get(0))
        })?;
        Ok(stored.try_into().unwrap_or(candidate))
    }

    pub fn lease(&self, name: &str) -> Result<Option<(LeaseRecord, i64)>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT holder, acquired_ms, renewed_ms, duration_ms, transitions, version FROM leases WHERE name = ?1",
                params![name],
                |row| {
                    let record = LeaseRecord {
                        holder: row.get(0)?,
                        acquired_ms: row.get(1)?,
                        renewed_ms: row.get(2)?,
                        duration_ms: row.get(3)?,
                        transitions: row.get(4)?,
                    };
                    Ok((record, row.get(5)?))
                },
            )
            .optional()
        })
    }

    pub fn swap_lease(&self, name: &str, expected: Option<i64>, record: &LeaseRecord) -> Result<bool, StoreError> {
        let values = params![
            name,
            record.holder,
            record.acquired_ms,
            record.renewed_ms,
            record.duration_ms,
            record.transitions,
            expected.unwrap_or(0) + 1
        ];
        self.with(|db| {
            let written = match expected {
                None => db.execute(
                    "INSERT OR IGNORE INTO leases (name, holder, acquired_ms, renewed_ms, duration_ms, transitions, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    values,
                )?,
                Some(_) => db.execute(
                    "UPDATE leases SET holder = ?2, acquired_ms = ?3, renewed_ms = ?4, duration_ms = ?5,
                         transitions = ?6, version = ?7
                     WHERE name = ?1 AND version = ?7 - 1",
                    values,
                )?,
            };
            Ok(written == 1)
        })
    }

    pub fn request(&self, request: &Request, now_ms: i64) -> Result<(), StoreError> {
        let body = serde_json::to_string(request).unwrap_or_default();
        self.with(|db| {
            db.execute("INSERT INTO requests (body, requested_ms) VALUES (?1, ?2)", params![body, now_ms]).map(|_| ())
        })
    }

    pub fn take_requests(&self) -> Result<Vec<Request>, StoreError> {
        let bodies: Vec<String> = self.with(|db| {
            let transaction = writing(db)?;
            let bodies = transaction
                .prepare_cached("SELECT body FROM requests ORDER BY id")?
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            transaction.execute("DELETE FROM requests", [])?;
            transaction.commit()?;
            Ok(bodies)
        })?;
        Ok(bodies.iter().filter_map(|body| serde_json::from_str(body).ok()).collect())
    }

    pub fn publish_status(&self, env: &str, body: &str, now_ms: i64) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO statuses (env, body, published_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (env) DO UPDATE SET body = excluded.body, published_ms = excluded.published_ms",
                params![env, body, now_ms],
            )
            .map(|_| ())
        })
    }

    pub fn published_statuses(&self) -> Result<Vec<PublishedStatus>, StoreError> {
        self.with(|db| {
            db.prepare_cached("SELECT env, body, published_ms FROM statuses ORDER BY env")?
                .query_map([], |row| {
                    Ok(PublishedStatus { env: row.get(0)?, body: row.get(1)?, published_ms: row.get(2)? })
                })?
                .collect()
        })
    }

    pub fn retain_statuses(&self, keep: &[String]) -> Result<(), StoreError> {
        let keep = serde_json::to_string(keep).unwrap_or_default();
        self.with(|db| {
            db.execute("DELETE FROM statuses WHERE env NOT IN (SELECT value FROM json_each(?1))", params![keep])
                .map(|_| ())
        })
    }
}

impl SqliteDb {
    pub fn record_job_run(&self, run: &JobRun, keep: KeepRuns) -> Result<Option<i64>, StoreError> {
        let (class, scheduled, body) = StoredJobRun::columns(run);
        let keep = StoredJobRun::kept(class, keep);
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            if let Some(key) = &run.key {
                transaction.execute(
                    "DELETE FROM job_run_keys WHERE env = ?1 AND seen_ms < ?2",
                    params![run.env, run.finished_at.saturating_sub(RUN_KEY_MEMORY_MS)],
                )?;
                let new = transaction.execute(
                    "INSERT OR IGNORE INTO job_run_keys (env, run_key, seen_ms) VALUES (?1, ?2, ?3)",
                    params![run.env, key, run.finished_at],
                )?;
                if new == 0 {
                    return Ok(None);
                }
            }
            transaction.execute(
                "INSERT INTO job_runs (env, job, class, scheduled_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run.env, run.job, class, scheduled, body],
            )?;
            let id = transaction.last_insert_rowid();
            transaction.execute(
                "DELETE FROM job_runs WHERE env = ?1 AND job = ?2 AND class = ?3 AND id <= (
                     SELECT id FROM job_runs WHERE env = ?1 AND job = ?2 AND class = ?3
                     ORDER BY id DESC LIMIT 1 OFFSET ?4)
                     AND id <> (SELECT COALESCE(MAX(id), 0) FROM job_runs WHERE env = ?1 AND job = ?2
                         AND scheduled_ms IS NOT NULL)",
                params![run.env, run.job, class, i64::from(keep)],
            )?;
            transaction.commit()?;
            Ok(Some(id))
        })
    }

    pub fn record_audit(&self, entry: &AuditEntry, keep_ms: i64) -> Result<(), StoreError> {
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            transaction.execute(
                "INSERT INTO audit (at_ms, who, authenticated, env, action, outcome, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.at_ms,
                    entry.who,
                    entry.authenticated,
                    entry.env,
                    entry.action,
                    entry.outcome.as_str(),
                    StoredAudit::body(entry)
                ],
            )?;
            transaction.execute("DELETE FROM audit WHERE at_ms < ?1", [entry.at_ms.saturating_sub(keep_ms)])?;
            if entry.is_attempt() {
                transaction.execute(
                    "DELETE FROM audit WHERE (authenticated = 0 OR outcome = 'refused') AND id <= (
                         SELECT id FROM audit WHERE (authenticated = 0 OR outcome = 'refused')
                         ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                    [i64::from(KEEP_AUDIT_ATTEMPTS)],
                )?;
            }
            transaction.commit()?;
            Ok(())
        })
    }

    pub fn audit(&self, filter: &AuditFilter, page: u32) -> Result<Page<StoredAudit>, StoreError> {
        let page: Page<(i64, String)> = self.with(|db| {
            read_page(
                db,
                "SELECT id, body FROM audit WHERE (:who IS NULL OR who = :who) AND (:env IS NULL OR env = :env)
                 AND (:action IS NULL OR action = :action) AND (:outcome IS NULL OR outcome = :outcome)
                 ORDER BY id DESC LIMIT :limit OFFSET :offset",
                &[
                    (":who", &filter.who as &dyn ToSql),
                    (":env", &filter.env),
                    (":action", &filter.action),
                    (":outcome", &filter.outcome),
                ],
                page,
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })?;
        let items = page.items.iter().filter_map(|(id, body)| StoredAudit::read(*id, body)).collect();
        Ok(Page { page: page.page, items, has_more: page.has_more })
    }

    pub fn job_run_keys(&self, env: &str) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.with(|db| {
            db.prepare_cached("SELECT run_key FROM job_run_keys WHERE env = ?1")?
                .query_map([env], |row| row.get(0))?
                .collect()
        })
    }

    pub fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<StoredJobRun>, StoreError> {
        let rows: Vec<(i64, String)> = self.with(|db| {
            db.prepare_cached(
                "SELECT id, body FROM job_runs WHERE env = ?1 AND (?2 IS NULL OR job = ?2) ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(params![env, job, i64::from(limit)], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
        })?;
        Ok(rows.iter().filter_map(|(id, body)| StoredJobRun::read(*id, body)).collect())
    }

    pub fn job_run(&self, id: i64) -> Result<Option<StoredJobRun>, StoreError> {
        let body: Option<String> =
            self.with(|db| db.query_row("SELECT body FROM job_runs WHERE id = ?1", [id], |row| row.get(0)).optional())?;
        Ok(body.and_then(|body| StoredJobRun::read(id, &body)))
    }

    pub fn last_scheduled(&self, env: &str, job: &str) -> Result<Option<i64>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT MAX(scheduled_ms) FROM job_runs WHERE env = ?1 AND job = ?2",
                params![env, job],
                |row| row.get(0),
            )
        })
    }

    /// Every row of every table, read in one transaction (a consistent copy while a daemon writes).
    pub fn dump(&self) -> Result<StoreDump, StoreError> {
        self.with(|db| {
            let transaction = db.unchecked_transaction()?;
            fn all<T>(
                transaction: &rusqlite::Transaction<'_>,
                query: &str,
                read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
            ) -> rusqlite::Result<Vec<T>> {
                transaction.prepare(query)?.query_map([], read)?.collect()
            }
            let dump = StoreDump {
                syncs: all(
                    &transaction,
                    "SELECT id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary,
                         diff, error, build_output FROM syncs ORDER BY id",
                    row_to_sync,
                )?,
                deliveries: all(
                    &transaction,
                    "SELECT received_ms, forge, event, accepted, reason, authenticated, id FROM webhook_deliveries
                     ORDER BY id",
                    |row| Ok(DumpedDelivery { id: row.get(6)?, delivery: row_to_delivery(row)? }),
                )?,
                environments: all(
                    &transaction,
                    "SELECT name, project, branch FROM environments ORDER BY position",
                    |row| Ok(KnownEnvironment { name: row.get(0)?, project: row.get(1)?, branch: row.get(2)? }),
                )?,
                scaling_rules: all(
                    &transaction,
                    "SELECT env, app, appeared_ms FROM scaling_rules ORDER BY env, app",
                    |row| Ok(DumpedScalingRule { env: row.get(0)?, app: row.get(1)?, appeared_ms: row.get(2)? }),
                )?,
                autoscale_decisions: all(
                    &transaction,
                    "SELECT env, app, replicas, decided_ms FROM autoscale_decisions ORDER BY env, app",
                    |row| {
                        Ok(DumpedAutoscaleDecision {
                            env: row.get(0)?,
                            app: row.get(1)?,
                            replicas: row.get(2)?,
                            decided_ms: row.get(3)?,
                        })
                    },
                )?,
                pull_requests: all(&transaction, "SELECT number, body FROM pull_requests ORDER BY number", |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?,
                pins: all(&transaction, "SELECT env, commit_sha, pinned_ms FROM pins ORDER BY env", |row| {
                    Ok(DumpedPin { env: row.get(0)?, commit_sha: row.get(1)?, pinned_ms: row.get(2)? })
                })?,
                delivery_ids: all(
                    &transaction,
                    "SELECT forge, delivery, received_ms FROM webhook_delivery_ids ORDER BY forge, delivery",
                    |row| Ok(DumpedDeliveryId { forge: row.get(0)?, delivery: row.get(1)?, received_ms: row.get(2)? }),
                )?,
                placements: all(&transaction, "SELECT env, target, placed_ms FROM placements ORDER BY env", |row| {
                    Ok(DumpedPlacement { env: row.get(0)?, target: row.get(1)?, placed_ms: row.get(2)? })
                })?,
                shared_keys: all(&transaction, "SELECT name, value FROM shared_keys ORDER BY name", |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?,
                leases: all(
                    &transaction,
                    "SELECT name, holder, acquired_ms, renewed_ms, duration_ms, transitions, version FROM leases
                     ORDER BY name",
                    |row| {
                        Ok(DumpedLease {
                            name: row.get(0)?,
                            record: LeaseRecord {
                                holder: row.get(1)?,
                                acquired_ms: row.get(2)?,
                                renewed_ms: row.get(3)?,
                                duration_ms: row.get(4)?,
                                transitions: row.get(5)?,
                            },
                            version: row.get(6)?,
                        })
                    },
                )?,
                requests: all(&transaction, "SELECT id, body, requested_ms FROM requests ORDER BY id", |row| {
                    Ok(DumpedRequest { id: row.get(0)?, body: row.get(1)?, requested_ms: row.get(2)? })
                })?,
                job_run_keys: all(
                    &transaction,
                    "SELECT env, run_key, seen_ms FROM job_run_keys ORDER BY env, run_key",
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?,
                job_runs: all(&transaction, "SELECT id, body FROM job_runs ORDER BY id", |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .into_iter()
                .filter_map(|(id, body)| StoredJobRun::read(id, &body))
                .collect(),
                statuses: all(&transaction, "SELECT env, body, published_ms FROM statuses ORDER BY env", |row| {
                    Ok(PublishedStatus { env: row.get(0)?, body: row.get(1)?, published_ms: row.get(2)? })
                })?,
                audit: all(&transaction, "SELECT id, body FROM audit ORDER BY id", |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .into_iter()
                .filter_map(|(id, body)| StoredAudit::read(id, &body))
                .collect(),
            };
            transaction.commit()?;
            Ok(dump)
        })
    }

    /// Writes `dump` into this empty database in one transaction; refused when a table holds a row already.
    pub fn load(&self, dump: &StoreDump, location: &str) -> Result<(), StoreError> {
        let connection = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // IMMEDIATE: the write lock is taken before the emptiness check, so no daemon slips a row in between.
        let transaction = writing(&connection)?;
        for table in TABLES {
            let taken: bool =
                transaction.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |row| row.get(0))?;
            if taken {
                return Err(StoreError::NotEmpty { location: location.to_owned(), table: (*table).to_owned() });
            }
        }
        {
            let mut insert = transaction.prepare(
                "INSERT INTO syncs (id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome,
                     summary, diff, error, build_output) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for sync in &dump.syncs {
                insert.execute(params![
                    sync.id,
                    sync.env,
                    sync.commit_sha,
                    sync.commit_summary,
                    sync.trigger,
                    sync.started_ms,
                    sync.finished_ms,
                    sync.outcome,
                    sync.summary,
                    sync.diff,
                    sync.error,
                    sync.build_output
                ])?;
            }
            let mut insert = transaction.prepare(
                "INSERT INTO webhook_deliveries (id, received_ms, forge, event, accepted, reason, authenticated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for DumpedDelivery { id, delivery } in &dump.deliveries {
                insert.execute(params![
                    id,
                    delivery.received_ms,
                    delivery.forge,
                    delivery.event,
                    delivery.accepted,
                    delivery.reason,
                    delivery.authenticated
                ])?;
            }
            let mut insert = transaction
                .prepare("INSERT INTO environments (name, project, branch, position) VALUES (?1, ?2, ?3, ?4)")?;
            for (position, env) in dump.environments.iter().enumerate() {
                insert.execute(params![env.name, env.project, env.branch, position as i64])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO scaling_rules (env, app, appeared_ms) VALUES (?1, ?2, ?3)")?;
            for rule in &dump.scaling_rules {
                insert.execute(params![rule.env, rule.app, rule.appeared_ms])?;
            }
            let mut insert = transaction
                .prepare("INSERT INTO autoscale_decisions (env, app, replicas, decided_ms) VALUES (?1, ?2, ?3, ?4)")?;
            for decision in &dump.autoscale_decisions {
                insert.execute(params![decision.env, decision.app, decision.replicas, decision.decided_ms])?;
            }
            let mut insert = transaction.prepare("INSERT INTO pull_requests (number, body) VALUES (?1, ?2)")?;
            for (number, body) in &dump.pull_requests {
                insert.execute(params![number, body])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO pins (env, commit_sha, pinned_ms) VALUES (?1, ?2, ?3)")?;
            for pin in &dump.pins {
                insert.execute(params![pin.env, pin.commit_sha, pin.pinned_ms])?;
            }
            let mut insert = transaction
                .prepare("INSERT INTO webhook_delivery_ids (forge, delivery, received_ms) VALUES (?1, ?2, ?3)")?;
            for id in &dump.delivery_ids {
                insert.execute(params![id.forge, id.delivery, id.received_ms])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO placements (env, target, placed_ms) VALUES (?1, ?2, ?3)")?;
            for placement in &dump.placements {
                insert.execute(params![placement.env, placement.target, placement.placed_ms])?;
            }
            let mut insert = transaction.prepare("INSERT INTO shared_keys (name, value) VALUES (?1, ?2)")?;
            for (name, value) in &dump.shared_keys {
                insert.execute(params![name, value])?;
            }
            let mut insert = transaction.prepare(
                "INSERT INTO leases (name, holder, acquired_ms, renewed_ms, duration_ms, transitions, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for lease in &dump.leases {
                let record = &lease.record;
                insert.execute(params![
                    lease.name,
                    record.holder,
                    record.acquired_ms,
                    record.renewed_ms,
                    record.duration_ms,
                    record.transitions,
                    lease.version
                ])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO requests (id, body, requested_ms) VALUES (?1, ?2, ?3)")?;
            for request in &dump.requests {
                insert.execute(params![request.id, request.body, request.requested_ms])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO statuses (env, body, published_ms) VALUES (?1, ?2, ?3)")?;
            for status in &dump.statuses {
                insert.execute(params![status.env, status.body, status.published_ms])?;
            }
            let mut insert = transaction.prepare(
                "INSERT INTO job_runs (id, env, job, class, scheduled_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for stored in &dump.job_runs {
                let (class, scheduled, body) = StoredJobRun::columns(&stored.run);
                insert.execute(params![stored.id, stored.run.env, stored.run.job, class, scheduled, body])?;
            }
            let mut insert =
                transaction.prepare("INSERT INTO job_run_keys (env, run_key, seen_ms) VALUES (?1, ?2, ?3)")?;
            for (env, key, seen_ms) in &dump.job_run_keys {
                insert.execute(params![env, key, seen_ms])?;
            }
            let mut insert = transaction.prepare(
                "INSERT INTO audit (id, at_ms, who, authenticated, env, action, outcome, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for stored in &dump.audit {
                let entry = &stored.entry;
                let body = StoredAudit::body(entry);
                let outcome = entry.outcome.as_str();
                insert.execute(params![
                    stored.id,
                    entry.at_ms,
                    entry.who,
                    entry.authenticated,
                    entry.env,
                    entry.action,
                    outcome,
                    body
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

/// Trims the deliveries' history of one kind to its newest `keep` rows once `added` more were inserted, and says how
/// many it holds then. With a recent count only the excess is deleted, oldest first; otherwise every row beyond the
/// newest `keep` goes and the rest are counted anew.
fn trim_deliveries(
    db: &Connection,
    authenticated: bool,
    keep: u32,
    added: u32,
    counted: Option<CountedRows>,
) -> rusqlite::Result<CountedRows> {
    if let Some(counted) = counted.filter(|counted| counted.counted.elapsed() < RECOUNT_DELIVERIES) {
        let rows = counted.rows.saturating_add(added);
        if rows > keep {
            db.prepare_cached(
                "DELETE FROM webhook_deliveries WHERE id IN (
                     SELECT id FROM webhook_deliveries WHERE authenticated = ?1 ORDER BY id LIMIT ?2)",
            )?
            .execute(params![authenticated, rows - keep])?;
        }
        return Ok(CountedRows { rows: rows.min(keep), counted: counted.counted });
    }
    db.prepare_cached(
        "DELETE FROM webhook_deliveries WHERE authenticated = ?2 AND id <= (
             SELECT id FROM webhook_deliveries WHERE authenticated = ?2 ORDER BY id DESC LIMIT 1 OFFSET ?1)",
    )?
    .execute(params![i64::from(keep), authenticated])?;
    let rows: i64 = db
        .prepare_cached("SELECT COUNT(*) FROM webhook_deliveries WHERE authenticated = ?1")?
        .query_row([authenticated], |row| row.get(0))?;
    Ok(CountedRows { rows: u32::try_from(rows).unwrap_or(u32::MAX), counted: std::time::Instant::now() })
}

/// [`SqliteDb`] behind the async [`StoreEngine`]: each call moves its arguments to a blocking thread.
pub struct SqliteEngine {
    db: Arc<SqliteDb>,
    /// The database's directory as `sqlite:DIR`, for errors.
    location: String,
    /// The webhook deliveries' writer, a thread started on the first delivery.
    deliveries: OnceLock<Result<GroupCommit, String>>,
}

impl SqliteEngine {
    pub fn new(db: Arc<SqliteDb>, location: String) -> SqliteEngine {
        SqliteEngine { db, location, deliveries: OnceLock::new() }
    }

    fn deliveries_writer(&self) -> Result<&GroupCommit, StoreError> {
        let db = Arc::clone(&self.db);
        self.deliveries
            .get_or_init(|| {
                GroupCommit::on_thread("railyard-deliveries", move |writes| db.write_deliveries(writes))
                    .map_err(|error| format!("cannot start the webhook deliveries' writer: {error}"))
            })
            .as_ref()
            .map_err(|error| StoreError::Worker(error.clone()))
    }
}

/// Runs `$call` on `db` (the engine's database) on a blocking thread; the arguments it names must be owned.
macro_rules! blocking {
    ($engine:expr, |$db:ident| $call:expr) => {{
        let $db = Arc::clone(&$engine.db);
        tokio::task::spawn_blocking(move || $call).await.map_err(|error| StoreError::Worker(error.to_string()))?
    }};
}

#[async_trait]
impl StoreEngine for SqliteEngine {
    async fn ping(&self) -> Result<(), StoreError> {
        blocking!(self, |db| db.ping())
    }

    async fn known_environments(&self) -> Result<Vec<KnownEnvironment>, StoreError> {
        blocking!(self, |db| db.known_environments())
    }

    async fn remember_environments(&self, environments: &[KnownEnvironment]) -> Result<(), StoreError> {
        let environments = environments.to_vec();
        blocking!(self, |db| db.remember_environments(&environments))
    }

    async fn forget_environment(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        blocking!(self, |db| db.forget_environment(&name))
    }

    async fn remember_pull_requests(&self, open: &[crate::previews::PullRequest]) -> Result<(), StoreError> {
        let open = open.to_vec();
        blocking!(self, |db| db.remember_pull_requests(&open))
    }

    async fn pull_requests(&self) -> Result<Vec<crate::previews::PullRequest>, StoreError> {
        blocking!(self, |db| db.pull_requests())
    }

    async fn pin(&self, env: &str, sha: &str, now_ms: i64) -> Result<(), StoreError> {
        let (env, sha) = (env.to_owned(), sha.to_owned());
        blocking!(self, |db| db.pin(&env, &sha, now_ms))
    }

    async fn unpin(&self, env: &str) -> Result<(), StoreError> {
        let env = env.to_owned();
        blocking!(self, |db| db.unpin(&env))
    }

    async fn pin_of(&self, env: &str) -> Result<Option<(String, i64)>, StoreError> {
        let env = env.to_owned();
        blocking!(self, |db| db.pin_of(&env))
    }

    async fn synced_commit(&self, env: &str, prefix: &str) -> Result<Option<String>, StoreError> {
        let (env, prefix) = (env.to_owned(), prefix.to_owned());
        blocking!(self, |db| db.synced_commit(&env, &prefix))
    }

    async fn place(&self, env: &str, target: &crate::targets::Target, now_ms: i64) -> Result<(), StoreError> {
        let (env, target) = (env.to_owned(), target.clone());
        blocking!(self, |db| db.place(&env, &target, now_ms))
    }

    async fn placement(&self, env: &str) -> Result<Option<crate::targets::Target>, StoreError> {
        let env = env.to_owned();
        blocking!(self, |db| db.placement(&env))
    }

    async fn scaling_rules_appeared(
        &self,
        env: &str,
        apps: &[String],
        now_ms: i64,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let (env, apps) = (env.to_owned(), apps.to_vec());
        blocking!(self, |db| db.scaling_rules_appeared(&env, &apps, now_ms))
    }

    async fn autoscale_decisions(&self, env: &str, apps: &[String]) -> Result<BTreeMap<String, u32>, StoreError> {
        let (env, apps) = (env.to_owned(), apps.to_vec());
        blocking!(self, |db| db.autoscale_decisions(&env, &apps))
    }

    async fn record_autoscale_decision(
        &self,
        env: &str,
        app: &str,
        replicas: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (env, app) = (env.to_owned(), app.to_owned());
        blocking!(self, |db| db.record_autoscale_decision(&env, &app, replicas, now_ms))
    }

    async fn record_sync(&self, record: &SyncRecord, keep: u32) -> Result<i64, StoreError> {
        let record = record.clone();
        blocking!(self, |db| db.record_sync(&record, keep))
    }

    async fn syncs(&self, env: Option<&str>, page: u32) -> Result<Page<SyncRecord>, StoreError> {
        let env = env.map(str::to_owned);
        blocking!(self, |db| db.syncs(env.as_deref(), page))
    }

    async fn sync(&self, id: i64) -> Result<Option<SyncRecord>, StoreError> {
        blocking!(self, |db| db.sync(id))
    }

    async fn write_deliveries(&self, writes: Vec<DeliveryWrite>) -> Result<Vec<bool>, StoreError> {
        blocking!(self, |db| db.write_deliveries(&writes))
    }

    async fn write_delivery(&self, write: DeliveryWrite) -> Result<bool, StoreError> {
        match self.deliveries_writer()?.write(write).await {
            Some(answer) => answer,
            None => Err(StoreError::Worker("the webhook deliveries' writer stopped".to_owned())),
        }
    }

    async fn deliveries(&self, page: u32) -> Result<Page<Delivery>, StoreError> {
        blocking!(self, |db| db.deliveries(page))
    }

    async fn digest_key(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        blocking!(self, |db| db.digest_key(candidate))
    }

    async fn lease(&self, name: &str) -> Result<Option<(LeaseRecord, i64)>, StoreError> {
        let name = name.to_owned();
        blocking!(self, |db| db.lease(&name))
    }

    async fn swap_lease(&self, name: &str, expected: Option<i64>, record: &LeaseRecord) -> Result<bool, StoreError> {
        let (name, record) = (name.to_owned(), record.clone());
        blocking!(self, |db| db.swap_lease(&name, expected, &record))
    }

    async fn request(&self, request: &Request, now_ms: i64) -> Result<(), StoreError> {
        let request = request.clone();
        blocking!(self, |db| db.request(&request, now_ms))
    }

    async fn take_requests(&self) -> Result<Vec<Request>, StoreError> {
        blocking!(self, |db| db.take_requests())
    }

    async fn publish_status(&self, env: &str, body: &str, now_ms: i64) -> Result<(), StoreError> {
        let (env, body) = (env.to_owned(), body.to_owned());
        blocking!(self, |db| db.publish_status(&env, &body, now_ms))
    }

    async fn published_statuses(&self) -> Result<Vec<PublishedStatus>, StoreError> {
        blocking!(self, |db| db.published_statuses())
    }

    async fn retain_statuses(&self, keep: &[String]) -> Result<(), StoreError> {
        let keep = keep.to_vec();
        blocking!(self, |db| db.retain_statuses(&keep))
    }

    async fn record_job_run(&self, run: &JobRun, keep: KeepRuns) -> Result<Option<i64>, StoreError> {
        let run = run.clone();
        blocking!(self, |db| db.record_job_run(&run, keep))
    }

    async fn record_audit(&self, entry: &AuditEntry, keep_ms: i64) -> Result<(), StoreError> {
        let entry = entry.clone();
        blocking!(self, |db| db.record_audit(&entry, keep_ms))
    }

    async fn audit(&self, filter: &AuditFilter, page: u32) -> Result<Page<StoredAudit>, StoreError> {
        let filter = filter.clone();
        blocking!(self, |db| db.audit(&filter, page))
    }

    async fn job_run_keys(&self, env: &str) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let env = env.to_owned();
        blocking!(self, |db| db.job_run_keys(&env))
    }

    async fn job_runs(&self, env: &str, job: Option<&str>, limit: u32) -> Result<Vec<StoredJobRun>, StoreError> {
        let (env, job) = (env.to_owned(), job.map(str::to_owned));
        blocking!(self, |db| db.job_runs(&env, job.as_deref(), limit))
    }

    async fn job_run(&self, id: i64) -> Result<Option<StoredJobRun>, StoreError> {
        blocking!(self, |db| db.job_run(id))
    }

    async fn last_scheduled(&self, env: &str, job: &str) -> Result<Option<i64>, StoreError> {
        let (env, job) = (env.to_owned(), job.to_owned());
        blocking!(self, |db| db.last_scheduled(&env, &job))
    }

    async fn dump(&self) -> Result<StoreDump, StoreError> {
        blocking!(self, |db| db.dump())
    }

    async fn load(&self, dump: &StoreDump) -> Result<(), StoreError> {
        let (dump, location) = (dump.clone(), self.location.clone());
        blocking!(self, |db| db.load(&dump, &location))
    }
}

/// Page `page` of `query`, whose rows are read by `row`. The query binds `:limit` and `:offset` (one row more than a
/// page is asked for, so that `has_more` needs no second count query) besides its own `filters`.
fn read_page<T>(
    db: &Connection,
    query: &str,
    filters: &[(&str, &dyn ToSql)],
    page: u32,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Page<T>> {
    let limit = i64::from(PAGE_SIZE) + 1;
    let offset = i64::from(page) * i64::from(PAGE_SIZE);
    let mut parameters = filters.to_vec();
    parameters.extend([(":limit", &limit as &dyn ToSql), (":offset", &offset)]);
    let mut items: Vec<T> =
        db.prepare_cached(query)?.query_map(parameters.as_slice(), row)?.collect::<rusqlite::Result<_>>()?;
    let has_more = items.len() > PAGE_SIZE as usize;
    items.truncate(PAGE_SIZE as usize);
    Ok(Page { page, items, has_more })
}

fn row_to_delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        received_ms: row.get(0)?,
        forge: row.get(1)?,
        event: row.get(2)?,
        accepted: row.get(3)?,
        reason: row.get(4)?,
        authenticated: row.get(5)?,
    })
}

/// Triggers and outcomes are stored as their words (the schema checks them).
macro_rules! stored_as_word {
    ($type:ty) => {
        impl ToSql for $type {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|error| FromSqlError::Other(Box::new(error)))
            }
        }
    };
}

stored_as_word!(Trigger);
stored_as_word!(SyncOutcome);

fn row_to_sync(row: &Row<'_>) -> rusqlite::Result<SyncRecord> {
    Ok(SyncRecord {
        id: row.get(0)?,
        env: row.get(1)?,
        commit_sha: row.get(2)?,
        commit_summary: row.get(3)?,
        trigger: row.get(4)?,
        started_ms: row.get(5)?,
        finished_ms: row.get(6)?,
        outcome: row.get(7)?,
        summary: row.get(8)?,
        diff: row.get(9)?,
        error: row.get(10)?,
        build_output: row.get(11)?,
    })
}

/// Applies the migrations the file lacks, each under the write lock with the version read inside it, so that two
/// processes opening one file together (replicas on one host) migrate it once: the second waits, then finds the
/// version moved on.
fn migrate(connection: &Connection, path: &str) -> Result<(), StoreError> {
    loop {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = match connection.query_row("PRAGMA user_version", [], |row| row.get(0)) {
            Ok(version) => version,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error.into());
            }
        };
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        let Some(migration) = MIGRATIONS.get(version) else {
            connection.execute_batch("COMMIT")?;
            if version > MIGRATIONS.len() {
                return Err(StoreError::TooNew { path: path.to_owned(), found: version, known: MIGRATIONS.len() });
            }
            return Ok(());
        };
        let applied = connection.execute_batch(&format!("{migration}; PRAGMA user_version = {};", version + 1));
        match applied {
            Ok(()) => connection.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error.into());
            }
        }
    }
}

/// A transaction that reads, then writes what it read: it takes the write lock first (IMMEDIATE), so that a second
/// handle on the file waits its turn (busy timeout) instead of failing with SQLITE_BUSY when its read snapshot goes
/// stale; with two takers, each queued request reaches one of them.
fn writing(db: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate)
}

/// A table of one value per (environment, app).
#[derive(Clone, Copy)]
enum PerApp {
    /// `appeared_ms`: when the app's ScalingRule appeared.
    ScalingRules,
    /// `replicas`: the CPU autoscaler's last decision.
    AutoscaleDecisions,
}

impl PerApp {
    fn select(self) -> &'static str {
        match self {
            PerApp::ScalingRules => "SELECT app, appeared_ms FROM scaling_rules WHERE env = ?1",
            PerApp::AutoscaleDecisions => "SELECT app, replicas FROM autoscale_decisions WHERE env = ?1",
        }
    }

    fn delete(self) -> &'static str {
        match self {
            PerApp::ScalingRules => "DELETE FROM scaling_rules WHERE env = ?1 AND app = ?2",
            PerApp::AutoscaleDecisions => "DELETE FROM autoscale_decisions WHERE env = ?1 AND app = ?2",
        }
    }
}

/// The values of `table` for `env`'s `apps`; rows of `env`'s other apps are deleted.
fn per_app_keeping<T: rusqlite::types::FromSql>(
    transaction: &rusqlite::Transaction<'_>,
    table: PerApp,
    env: &str,
    apps: &[String],
) -> rusqlite::Result<BTreeMap<String, T>> {
    let mut kept = BTreeMap::new();
    let mut statement = transaction.prepare_cached(table.select())?;
    let rows = statement.query_map(params![env], |row| Ok((row.get::<_, String>(0)?, row.get::<_, T>(1)?)))?;
    for row in rows {
        let (app, value) = row?;
        if apps.contains(&app) {
            kept.insert(app, value);
        } else {
            transaction.execute(table.delete(), params![env, app])?;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KEEP_UNAUTHENTICATED;

    fn record(env: &str, n: i64) -> SyncRecord {
        SyncRecord {
            id: 0,
            env: env.to_owned(),
            commit_sha: Some(format!("{n:040}")),
            commit_summary: Some("change".to_owned()),
            trigger: Trigger::Webhook,
            started_ms: n,
            finished_ms: n + 5,
            outcome: SyncOutcome::Synced,
            summary: "1 to update".to_owned(),
            diff: "-a\n+b\n".to_owned(),
            error: None,
            build_output: String::new(),
        }
    }

    #[test]
    fn a_scaling_rule_keeps_the_time_it_appeared_across_restarts_until_it_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let apps = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        {
            let store = SqliteDb::open(dir.path()).expect("open");
            let first = store.scaling_rules_appeared("production", &apps(&["web"]), 100).expect("first");
            assert_eq!(first, BTreeMap::from([("web".to_owned(), 100)]));
            store.scaling_rules_appeared("staging", &apps(&["web"]), 150).expect("another environment");
        }
        let store = SqliteDb::open(dir.path()).expect("reopen");
        let later = store.scaling_rules_appeared("production", &apps(&["web", "api"]), 200).expect("later");
        assert_eq!(later, BTreeMap::from([("api".to_owned(), 200), ("web".to_owned(), 100)]));
        store.scaling_rules_appeared("production", &apps(&["api"]), 300).expect("web's rule removed");
        let again = store.scaling_rules_appeared("production", &apps(&["web", "api"]), 400).expect("web's rule back");
        assert_eq!(again, BTreeMap::from([("api".to_owned(), 200), ("web".to_owned(), 400)]));
        let staging = store.scaling_rules_appeared("staging", &apps(&["web"]), 500).expect("staging untouched");
        assert_eq!(staging, BTreeMap::from([("web".to_owned(), 150)]));
    }

    #[test]
    fn an_autoscale_decision_survives_restarts_and_goes_with_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let apps = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        {
            let store = SqliteDb::open(dir.path()).expect("open");
            store.record_autoscale_decision("production", "web", 3, 100).expect("decided");
            store.record_autoscale_decision("production", "web", 4, 200).expect("decided again");
            store.record_autoscale_decision("staging", "web", 2, 200).expect("another environment");
        }
        let store = SqliteDb::open(dir.path()).expect("reopen");
        let decided = store.autoscale_decisions("production", &apps(&["web", "api"])).expect("read");
        assert_eq!(decided, BTreeMap::from([("web".to_owned(), 4)]));
        assert!(store.autoscale_decisions("production", &apps(&["api"])).expect("web lost its target").is_empty());
        assert!(store.autoscale_decisions("production", &apps(&["web"])).expect("and it is gone").is_empty());
        let staging = store.autoscale_decisions("staging", &apps(&["web"])).expect("staging untouched");
        assert_eq!(staging, BTreeMap::from([("web".to_owned(), 2)]));
    }

    #[test]
    fn history_written_as_free_text_reads_back_typed_and_the_schema_refuses_unknown_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // A database as the railyard before typed outcomes left it.
            let connection = Connection::open(dir.path().join("railyard.db")).expect("open");
            for migration in &MIGRATIONS[..8] {
                connection.execute_batch(migration).expect("older schema");
            }
            connection.pragma_update(None, "user_version", 8).expect("version");
            let insert =
                "INSERT INTO syncs (env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome,
                 summary, diff, error) VALUES ('production', ?1, 'change', ?2, 1, 2, ?3, 'summary', '', NULL)";
            for (sha, trigger, outcome) in
                [("a1", "webhook", "synced"), ("b2", "poll", "error"), ("c3", "odd", "rolled-back")]
            {
                connection.execute(insert, params![sha, trigger, outcome]).expect("legacy row");
            }
        }
        let store = SqliteDb::open(dir.path()).expect("migrated");
        let read: Vec<(Trigger, SyncOutcome)> =
            store.syncs(Some("production"), 0).expect("history").items.iter().map(|s| (s.trigger, s.outcome)).collect();
        assert_eq!(
            read,
            [
                (Trigger::Poll, SyncOutcome::RolledBack),
                (Trigger::Poll, SyncOutcome::Failed),
                (Trigger::Webhook, SyncOutcome::Synced)
            ]
        );
        assert_eq!(store.synced_commit("production", "a").expect("query"), Some("a1".to_owned()));
        assert_eq!(store.synced_commit("production", "b").expect("query"), None, "a failed sync is no rollback target");
        let refused = store.with(|db| {
            db.execute(
                "INSERT INTO syncs (env, trigger, started_ms, finished_ms, outcome, summary, diff)
                 VALUES ('production', 'poll', 1, 2, 'exploded', '', '')",
                [],
            )
        });
        assert!(refused.is_err(), "the schema checks the outcome's word");
    }

    #[test]
    fn every_trigger_and_outcome_is_a_word_the_schema_takes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open(dir.path()).expect("open");
        for (n, trigger) in Trigger::ALL.iter().enumerate() {
            for outcome in SyncOutcome::ALL {
                let sync = SyncRecord { trigger: *trigger, outcome: *outcome, ..record("production", n as i64) };
                store.record_sync(&sync, 1000).unwrap_or_else(|e| panic!("{trigger} {outcome}: {e}"));
            }
        }
        let rollback = SyncRecord { trigger: Trigger::Rollback, ..record("production", 99) };
        store.record_sync(&rollback, 1000).expect("a rollback");
        let newest = store.syncs(Some("production"), 0).expect("history").items;
        assert_eq!(newest.first().map(|sync| sync.trigger), Some(Trigger::Rollback), "reads back as written");
    }

    #[test]
    fn history_survives_reopening_and_pages_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteDb::open(dir.path()).expect("open");
            for n in 0..45 {
                store.record_sync(&record(if n % 3 == 0 { "pr-1" } else { "production" }, n), 1000).expect("insert");
            }
        }
        let store = SqliteDb::open(dir.path()).expect("reopen");
        let first = store.syncs(None, 0).expect("page");
        assert_eq!(first.items.len(), 20);
        assert!(first.has_more);
        assert_eq!(first.items[0].started_ms, 44);
        let last = store.syncs(None, 2).expect("page");
        assert_eq!(last.items.len(), 5);
        assert!(!last.has_more);
        let previews = store.syncs(Some("pr-1"), 0).expect("page");
        assert_eq!(previews.items.len(), 15);
        assert_eq!(store.sync(first.items[0].id).expect("get"), Some(first.items[0].clone()));
    }

    #[test]
    fn history_keeps_the_newest_syncs_per_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open(dir.path()).expect("open");
        for n in 0..30 {
            store.record_sync(&record("production", n), 7).expect("insert");
            store.record_sync(&record("pr-1", n), 1000).expect("insert");
        }
        let kept: Vec<i64> =
            store.syncs(Some("production"), 0).expect("page").items.iter().map(|s| s.started_ms).collect();
        assert_eq!(kept, (23..30).rev().collect::<Vec<_>>());
        assert_eq!(store.syncs(Some("pr-1"), 1).expect("page").items.len(), 10, "other environments keep theirs");
    }

    #[test]
    fn delivery_ids_are_remembered_for_a_day_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = DELIVERY_MEMORY_MS;
        {
            let store = SqliteDb::open(dir.path()).expect("open");
            assert!(store.first_delivery("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 1_000).expect("first"));
            assert!(!store.first_delivery("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 2_000).expect("again"));
            assert!(store.first_delivery("gitea", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 2_000).expect("other forge"));
        }
        let store = SqliteDb::open(dir.path()).expect("reopen");
        assert!(
            !store.first_delivery("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", day).expect("after a restart"),
            "a restart does not forget"
        );
        assert!(store.first_delivery("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 1_000 + day).expect("a day on"));
        let kept: i64 = store
            .with(|db| db.query_row("SELECT COUNT(*) FROM webhook_delivery_ids", [], |row| row.get(0)))
            .expect("count");
        assert_eq!(kept, 2, "github's id of 1,000 was pruned and taken anew; gitea's of 2,000 is within the day");
        assert!(store.first_delivery("generic", "x", 2_000 + day).expect("later"));
        let kept: i64 = store
            .with(|db| db.query_row("SELECT COUNT(*) FROM webhook_delivery_ids", [], |row| row.get(0)))
            .expect("count");
        assert_eq!(kept, 2, "ids older than a day are pruned: github's anew and generic's are left");
    }

    #[test]
    fn unauthenticated_deliveries_are_capped_apart_from_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open(dir.path()).expect("open");
        let delivery = |n: i64, authenticated: bool| Delivery {
            received_ms: n,
            forge: "github".to_owned(),
            event: "push".to_owned(),
            accepted: authenticated,
            reason: String::new(),
            authenticated,
        };
        for n in 0..5 {
            store.record_delivery(&delivery(n, true), 3).expect("insert");
        }
        for n in 5..300 {
            store.record_delivery(&delivery(n, false), 3).expect("insert");
        }
        let mut all = Vec::new();
        for page in 0.. {
            let page = store.deliveries(page).expect("page");
            all.extend(page.items);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(all.iter().filter(|d| !d.authenticated).count(), KEEP_UNAUTHENTICATED as usize);
        assert_eq!(all.iter().filter(|d| !d.authenticated).map(|d| d.received_ms).max(), Some(299));
        let signed: Vec<i64> = all.iter().filter(|d| d.authenticated).map(|d| d.received_ms).collect();
        assert_eq!(signed, [4, 3, 2], "a flood of forged deliveries does not push out the real ones");
    }

    /// Batches of every size, both kinds mixed, a failed batch among them: after each, exactly the newest `keep` of
    /// each kind are left (the handle's count of them is only trusted once its batch committed).
    #[test]
    fn batches_trim_the_history_to_exactly_what_they_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open(dir.path()).expect("open");
        let mut next = 0;
        let mut batch = |signed: usize, unsigned: usize| -> Vec<DeliveryWrite> {
            let kinds = std::iter::repeat_n(true, signed).chain(std::iter::repeat_n(false, unsigned));
            kinds
                .map(|authenticated| {
                    next += 1;
                    let delivery = Delivery {
                        received_ms: next,
                        forge: "github".to_owned(),
                        event: "push".to_owned(),
                        accepted: authenticated,
                        reason: String::new(),
                        authenticated,
                    };
                    DeliveryWrite::Record(DeliveryRecord { delivery, keep: 5 })
                })
                .collect()
        };
        let newest = |store: &SqliteDb, authenticated: bool| -> Vec<i64> {
            let rows = store
                .deliveries(0)
                .expect("page")
                .items
                .into_iter()
                .chain((1..20).flat_map(|page| store.deliveries(page).expect("page").items));
            rows.filter(|delivery| delivery.authenticated == authenticated).map(|d| d.received_ms).collect()
        };
        for (signed, unsigned) in [(2, 0), (2, 60), (1, 0), (7, 50), (0, 1), (3, 3)] {
            store.write_deliveries(&batch(signed, unsigned)).expect("written");
            assert!(newest(&store, true).len() <= 5);
            assert!(newest(&store, false).len() <= KEEP_UNAUTHENTICATED as usize);
        }
        assert_eq!(newest(&store, true), [126, 125, 124, 72, 71], "the newest 5 signed ones");
        assert_eq!(newest(&store, false).len(), 100);
        // A batch that fails leaves the table and the count as they were: counted as 4 rows, the next batch would
        // make them 6 and drop one of the 5 it should keep.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open(dir.path()).expect("open");
        store.write_deliveries(&batch(2, 0)).expect("written");
        let refuse = "CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries WHEN NEW.received_ms = 133
            BEGIN SELECT RAISE(ABORT, 'refused'); END;";
        store.with(|db| db.execute_batch(refuse)).expect("trigger");
        assert!(store.write_deliveries(&batch(2, 0)).is_err());
        store.with(|db| db.execute_batch("DROP TRIGGER refuse;")).expect("dropped");
        store.write_deliveries(&batch(3, 0)).expect("written");
        assert_eq!(newest(&store, true), [136, 135, 134, 131, 130]);
    }

    #[test]
    fn replicas_opening_one_new_file_together_migrate_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened: Vec<Result<SqliteDb, StoreError>> = std::thread::scope(|scope| {
            let openers: Vec<_> = (0..6).map(|_| scope.spawn(|| SqliteDb::open(dir.path()))).collect();
            openers.into_iter().map(|opener| opener.join().expect("no panic")).collect()
        });
        for result in &opened {
            assert!(result.is_ok(), "{:?}", result.as_ref().err().map(ToString::to_string));
        }
        let version: i64 = opened[0]
            .as_ref()
            .expect("open")
            .with(|db| db.query_row("PRAGMA user_version", [], |row| row.get(0)))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_database_from_a_newer_railyard_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        SqliteDb::open(dir.path()).expect("open");
        let db = Connection::open(dir.path().join("railyard.db")).expect("raw open");
        db.pragma_update(None, "user_version", 99).expect("bump");
        drop(db);
        let error = SqliteDb::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("schema 99"), "{error}");
    }
}
