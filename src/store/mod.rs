//! Sync history and webhook deliveries in SQLite under the state directory. Versioned migrations; nothing secret is
//! ever written (plans and diffs arrive redacted).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Rows per page of history.
pub const PAGE_SIZE: u32 = 20;

/// Each entry moves the schema one version up; applied in order, once.
const MIGRATIONS: &[&str] = &["CREATE TABLE syncs (
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
    );"];

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
}

/// One reconcile that changed something, failed, or found a commit invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub id: i64,
    pub env: String,
    pub commit_sha: Option<String>,
    pub commit_summary: Option<String>,
    pub trigger: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// `synced`, `failed`, `rolled-back`, `invalid`, `pending`, `error`.
    pub outcome: String,
    /// The plan's summary line.
    pub summary: String,
    /// The redacted diffs of the plan.
    pub diff: String,
    pub error: Option<String>,
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
}

/// A page of rows and whether more follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub page: u32,
    pub items: Vec<T>,
    pub has_more: bool,
}

pub struct Store {
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and migrating) `railyard.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("railyard.db");
        let open_error = |source| StoreError::Open { path: path.display().to_string(), source };
        let connection = Connection::open(&path).map_err(open_error)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(open_error)?;
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_error)?;
        migrate(&connection, &path.display().to_string())?;
        Ok(Store { connection: Mutex::new(connection) })
    }

    fn with<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let connection = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(work(&connection)?)
    }

    pub fn record_sync(&self, record: &SyncRecord) -> Result<i64, StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO syncs (env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                    record.error
                ],
            )?;
            Ok(db.last_insert_rowid())
        })
    }

    /// Newest first; `env` filters.
    pub fn syncs(&self, env: Option<&str>, page: u32) -> Result<Page<SyncRecord>, StoreError> {
        let offset = i64::from(page) * i64::from(PAGE_SIZE);
        self.with(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error
                 FROM syncs WHERE (?1 IS NULL OR env = ?1) ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let mut items: Vec<SyncRecord> =
                statement.query_map(params![env, i64::from(PAGE_SIZE) + 1, offset], row_to_sync)?.collect::<Result<_, _>>()?;
            let has_more = items.len() > PAGE_SIZE as usize;
            items.truncate(PAGE_SIZE as usize);
            Ok(Page { page, items, has_more })
        })
    }

    pub fn sync(&self, id: i64) -> Result<Option<SyncRecord>, StoreError> {
        self.with(|db| {
            db.query_row(
                "SELECT id, env, commit_sha, commit_summary, trigger, started_ms, finished_ms, outcome, summary, diff, error
                 FROM syncs WHERE id = ?1",
                [id],
                row_to_sync,
            )
            .optional()
        })
    }

    pub fn record_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO webhook_deliveries (received_ms, forge, event, accepted, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![delivery.received_ms, delivery.forge, delivery.event, delivery.accepted, delivery.reason],
            )
            .map(|_| ())
        })
    }

    /// Newest first.
    pub fn deliveries(&self, page: u32) -> Result<Page<Delivery>, StoreError> {
        let offset = i64::from(page) * i64::from(PAGE_SIZE);
        self.with(|db| {
            let mut statement = db.prepare_cached(
                "SELECT received_ms, forge, event, accepted, reason FROM webhook_deliveries ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )?;
            let mut items: Vec<Delivery> = statement
                .query_map(params![i64::from(PAGE_SIZE) + 1, offset], |row| {
                    Ok(Delivery {
                        received_ms: row.get(0)?,
                        forge: row.get(1)?,
                        event: row.get(2)?,
                        accepted: row.get(3)?,
                        reason: row.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let has_more = items.len() > PAGE_SIZE as usize;
            items.truncate(PAGE_SIZE as usize);
            Ok(Page { page, items, has_more })
        })
    }
}

fn row_to_sync(row: &rusqlite::Row<'_>) -> rusqlite::Result<SyncRecord> {
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
    })
}

fn migrate(connection: &Connection, path: &str) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew { path: path.to_owned(), found: version, known: MIGRATIONS.len() });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        connection.execute_batch(&format!("BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;", index + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(env: &str, n: i64) -> SyncRecord {
        SyncRecord {
            id: 0,
            env: env.to_owned(),
            commit_sha: Some(format!("{n:040}")),
            commit_summary: Some("change".to_owned()),
            trigger: "webhook".to_owned(),
            started_ms: n,
            finished_ms: n + 5,
            outcome: "synced".to_owned(),
            summary: "1 to update".to_owned(),
            diff: "-a\n+b\n".to_owned(),
            error: None,
        }
    }

    #[test]
    fn history_survives_reopening_and_pages_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            for n in 0..45 {
                store.record_sync(&record(if n % 3 == 0 { "pr-1" } else { "production" }, n)).expect("insert");
            }
        }
        let store = Store::open(dir.path()).expect("reopen");
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
    fn a_database_from_a_newer_railyard_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::open(dir.path()).expect("open");
        let db = Connection::open(dir.path().join("railyard.db")).expect("raw open");
        db.pragma_update(None, "user_version", 99).expect("bump");
        drop(db);
        let error = Store::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("schema 99"), "{error}");
    }
}
