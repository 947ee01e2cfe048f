//! The store's behaviour, written once and run on both engines (`store::sqlite::…` and `store::postgres::…`):
//! history paging and retention, deliveries, pins, placements, scaling and autoscaler memory, the lease's
//! compare-and-swap and the request queue under concurrent callers. Then what only PostgreSQL has: an outage and the
//! pool's recovery, replicas migrating an empty database together, and `railyard store migrate` between engines (the
//! real binary), whose output never shows a password.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command;

use railyard::backend::BackendKind;
use railyard::outcome::{SyncOutcome, Trigger};
use railyard::previews::PullRequest;
use railyard::store::{
    DELIVERY_MEMORY_MS, Delivery, DeliveryRecord, DeliveryWrite, KEEP_UNAUTHENTICATED, KnownEnvironment, LeaseRecord,
    Request, Store, StoreLocation, SyncRecord,
};
use railyard::targets::Target;

use crate::support::postgres::{PostgresCluster, SUPERUSER_PASSWORD};

/// Which engine a behaviour test runs on.
#[derive(Clone, Copy, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh, empty store of one engine: a temporary directory, or a new database of the shared cluster.
struct TestStore {
    location: StoreLocation,
    /// The SQLite directory, removed at the end.
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    fn new(engine: Engine) -> TestStore {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                TestStore { location: StoreLocation::Sqlite(dir.path().to_path_buf()), _dir: Some(dir) }
            }
            Engine::Postgres => {
                let cluster = PostgresCluster::shared();
                let url = cluster.url(&cluster.database());
                TestStore { location: StoreLocation::Postgres(url), _dir: None }
            }
        }
    }

    /// Another handle on the same database (as a second replica has).
    async fn connect(&self) -> Store {
        Store::connect(&self.location, Some(SUPERUSER_PASSWORD.to_owned()))
            .await
            .unwrap_or_else(|error| panic!("connect to {}: {error}", self.location.shown()))
    }

    /// Runs `sql` behind the store's back; true when the database accepted it.
    fn raw(&self, sql: &str) -> bool {
        match &self.location {
            StoreLocation::Sqlite(dir) => {
                let connection =
                    rusqlite::Connection::open(dir.join(railyard::store::DATABASE_FILE)).expect("open the file");
                connection.execute_batch(sql).is_ok()
            }
            StoreLocation::Postgres(url) => {
                let database = url.rsplit('/').next().and_then(|tail| tail.split('?').next()).unwrap_or_default();
                let cluster = PostgresCluster::shared();
                std::panic::catch_unwind(|| cluster.psql(database, sql)).is_ok()
            }
        }
    }
}

/// Each named `async fn(Engine)` becomes a test per engine.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Postgres).await
                }
            )*
        }
    };
}

on_both_engines!(
    history_pages_newest_first_and_says_whether_more_follow,
    history_keeps_the_newest_syncs_per_environment,
    unauthenticated_deliveries_are_capped_apart_from_the_others,
    delivery_ids_are_remembered_for_a_day,
    concurrent_deliveries_are_each_answered_and_recorded_and_replays_among_them_refused,
    a_batch_of_delivery_writes_answers_each_in_order,
    a_pin_is_kept_until_unpinned_and_rollback_targets_are_synced_commits,
    placements_are_remembered_and_forgotten_with_their_environment,
    a_scaling_rule_keeps_the_time_it_appeared_until_it_goes,
    an_autoscale_decision_is_remembered_until_its_app_loses_its_target,
    the_environments_list_keeps_its_order,
    pull_requests_are_replaced_as_a_whole,
    two_handles_on_one_database_share_the_digest_key,
    of_two_lease_swaps_from_one_version_exactly_one_wins,
    each_request_is_taken_once_by_concurrent_takers,
    statuses_are_published_replaced_and_retained,
    the_schema_refuses_an_unknown_outcome_word,
    every_trigger_and_outcome_reads_back_as_written,
    job_runs_are_kept_per_outcome_newest_first_with_the_last_schedule,
    the_audit_trail_filters_pages_and_forgets_by_age_and_count,
);

fn audit_entry(
    n: i64,
    who: &str,
    authenticated: bool,
    outcome: railyard::store::AuditOutcome,
) -> railyard::store::AuditEntry {
    railyard::store::AuditEntry {
        at_ms: 1_000_000 + n,
        who: who.to_owned(),
        delivery: None,
        authenticated,
        address: Some("127.0.0.1".to_owned()),
        action: if n % 2 == 0 { "sync" } else { "rollback" }.to_owned(),
        env: Some(if n % 3 == 0 { "staging" } else { "production" }.to_owned()),
        asked: format!("request {n}"),
        outcome,
        status: 202,
        detail: String::new(),
    }
}

async fn the_audit_trail_filters_pages_and_forgets_by_age_and_count(engine: Engine) {
    use railyard::store::{AuditFilter, AuditOutcome, KEEP_AUDIT_ATTEMPTS};
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let keep_ms = 1_000_000;
    for n in 0..30 {
        let entry = audit_entry(n, if n < 10 { "ops" } else { "ci" }, true, AuditOutcome::Accepted);
        store.record_audit(&entry, keep_ms).await.expect("record");
    }
    let first = store.audit(&AuditFilter::default(), 0).await.expect("page");
    assert_eq!(first.items.len(), railyard::store::PAGE_SIZE as usize);
    assert!(first.has_more);
    assert_eq!(first.items[0].entry, audit_entry(29, "ci", true, AuditOutcome::Accepted), "newest first, whole");
    let ops = AuditFilter { who: Some("ops".into()), ..AuditFilter::default() };
    assert_eq!(store.audit(&ops, 0).await.expect("ops").items.len(), 10);
    let narrow = AuditFilter {
        who: Some("ci".into()),
        env: Some("staging".into()),
        action: Some("sync".into()),
        outcome: Some("accepted".into()),
    };
    let asked: Vec<String> =
        store.audit(&narrow, 0).await.expect("narrow").items.into_iter().map(|stored| stored.entry.asked).collect();
    assert_eq!(asked, ["request 24", "request 18", "request 12"]);
    let refused = AuditFilter { outcome: Some("refused".into()), ..AuditFilter::default() };
    assert!(store.audit(&refused, 0).await.expect("refused").items.is_empty());

    // An entry older than the retention goes when a newer one is written.
    let later = railyard::store::AuditEntry {
        at_ms: 1_000_000 + keep_ms + 15,
        ..audit_entry(40, "ops", true, AuditOutcome::Failed)
    };
    store.record_audit(&later, keep_ms).await.expect("record");
    let all = store.audit(&AuditFilter { who: Some("ops".into()), ..AuditFilter::default() }, 0).await.expect("ops");
    assert_eq!(all.items.len(), 1, "the ten old entries of ops are gone: {:?}", all.items);

    // Refused attempts, with a token or without, are capped together; what was done stays.
    let flood = KEEP_AUDIT_ATTEMPTS as i64 + 5;
    for n in 0..flood {
        let (who, authenticated) = if n % 2 == 0 { ("anonymous", false) } else { ("ci", true) };
        let entry = railyard::store::AuditEntry {
            at_ms: later.at_ms,
            ..audit_entry(n, who, authenticated, AuditOutcome::Refused)
        };
        store.record_audit(&entry, keep_ms).await.expect("record");
    }
    let mut refused = 0;
    for page in 0.. {
        let read = store
            .audit(&AuditFilter { outcome: Some("refused".into()), ..AuditFilter::default() }, page)
            .await
            .expect("page");
        refused += read.items.len();
        if !read.has_more {
            break;
        }
    }
    assert_eq!(refused, KEEP_AUDIT_ATTEMPTS as usize);
    let done = AuditFilter { who: Some("ci".into()), outcome: Some("accepted".into()), ..AuditFilter::default() };
    let ci = store.audit(&done, 0).await.expect("ci");
    assert_eq!(ci.items.len(), 15, "ci's accepted entries within the retention stay");
}

fn job_run(job: &str, n: i64, succeeded: bool, trigger: railyard::backend::JobTrigger) -> railyard::backend::JobRun {
    use railyard::backend::JobOutcome;
    let outcome = if succeeded {
        JobOutcome::Succeeded
    } else {
        JobOutcome::Failed { exit_code: Some(3), reason: "exited with code 3".to_owned() }
    };
    railyard::backend::JobRun {
        finished_at: n + 1,
        ..crate::support::job_run(job, "production", trigger, n, outcome, &format!("run {n}\n"))
    }
}

async fn job_runs_are_kept_per_outcome_newest_first_with_the_last_schedule(engine: Engine) {
    use railyard::backend::JobTrigger;
    use railyard::model::job::KeepRuns;
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let keep = KeepRuns { succeeded: 2, failed: 1 };
    for n in 0..6 {
        let trigger = if n % 2 == 0 { JobTrigger::Schedule { at: 1000 + n } } else { JobTrigger::Apply };
        store.record_job_run(&job_run("cleanup", n, n < 4, trigger), keep).await.expect("record");
    }
    let other = store
        .record_job_run(&job_run("migrate", 9, true, JobTrigger::Apply), keep)
        .await
        .expect("record")
        .expect("a new run");
    let runs = store.job_runs("production", Some("cleanup"), 10).await.expect("runs");
    let kept: Vec<(i64, bool)> = runs.iter().map(|stored| (stored.run.started_at, stored.run.succeeded())).collect();
    assert_eq!(
        kept,
        [(5, false), (4, false), (3, true), (2, true)],
        "newest first; 2 succeeded and 1 failed kept, and the newest scheduled run"
    );
    assert_eq!(store.job_runs("production", None, 2).await.expect("runs").len(), 2, "the limit holds");
    assert_eq!(store.job_runs("staging", None, 10).await.expect("runs"), Vec::new());
    let read = store.job_run(other).await.expect("one").expect("found");
    assert_eq!((read.run.job.as_str(), read.run.output.as_str()), ("migrate", "run 9\n"));
    assert_eq!(store.job_run(other + 100).await.expect("none"), None);
    assert_eq!(store.last_scheduled("production", "cleanup").await.expect("last"), Some(1004));
    assert_eq!(store.last_scheduled("production", "migrate").await.expect("last"), None);

    // Skipped runs are kept apart: five of them push out no real failure.
    let skipped = |n: i64| railyard::backend::JobRun {
        outcome: railyard::backend::JobOutcome::Skipped { reason: "still running".into() },
        ..job_run("cleanup", n, false, JobTrigger::Apply)
    };
    for n in 10..15 {
        store.record_job_run(&skipped(n), keep).await.expect("record");
    }
    let runs = store.job_runs("production", Some("cleanup"), 10).await.expect("runs");
    assert!(runs.iter().any(|stored| stored.run.started_at == 5), "the last failure stays: {runs:?}");
    assert_eq!(runs.iter().filter(|stored| !stored.run.succeeded() && stored.run.started_at >= 10).count(), 1);

    // A run the platform started (keyed) is recorded once, however often it is reported.
    let keyed =
        railyard::backend::JobRun { key: Some("uid-1".into()), ..job_run("cleanup", 20, true, JobTrigger::Apply) };
    assert!(store.record_job_run(&keyed, keep).await.expect("record").is_some());
    assert_eq!(store.record_job_run(&keyed, keep).await.expect("record"), None);
    let keys = store.job_run_keys("production").await.expect("keys");
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["uid-1"]);
    // Its key outlives its record: retention drops the run, a later report of it is still no new run.
    for n in 21..30 {
        let later = railyard::backend::JobRun {
            key: Some(format!("uid-{n}")),
            ..job_run("cleanup", n, true, JobTrigger::Apply)
        };
        store.record_job_run(&later, keep).await.expect("record");
    }
    let runs = store.job_runs("production", Some("cleanup"), 100).await.expect("runs");
    assert!(runs.iter().all(|stored| stored.run.key.as_deref() != Some("uid-1")), "retention dropped it");
    assert_eq!(store.record_job_run(&keyed, keep).await.expect("record"), None, "and it is not recorded again");
}

fn record(env: &str, n: i64) -> SyncRecord {
    SyncRecord {
        id: 0,
        env: env.to_owned(),
        commit_sha: Some(format!("{n:040x}")),
        commit_summary: Some(format!("change {n}")),
        trigger: Trigger::Webhook,
        started_ms: n,
        finished_ms: n + 5,
        outcome: SyncOutcome::Synced,
        summary: "1 to update".to_owned(),
        diff: "-a\n+b\n".to_owned(),
        error: None,
        // Every other record carries a build's output, so that both engines keep it and copy it.
        build_output: if n % 2 == 0 {
            format!("== build web (railyard.local/shop/web:{n}): built\nStep 1/2 : FROM scratch\n")
        } else {
            String::new()
        },
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

async fn history_pages_newest_first_and_says_whether_more_follow(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    for n in 0..45 {
        store.record_sync(&record(if n % 3 == 0 { "pr-1" } else { "production" }, n), 1000).await.expect("record");
    }
    let first = store.syncs(None, 0).await.expect("page 0");
    assert_eq!(first.items.len(), 20);
    assert!(first.has_more);
    assert_eq!(first.items[0].started_ms, 44, "newest first");
    let middle = store.syncs(None, 1).await.expect("page 1");
    assert_eq!(middle.items.first().map(|sync| sync.started_ms), Some(24));
    let last = store.syncs(None, 2).await.expect("page 2");
    assert_eq!(last.items.len(), 5);
    assert!(!last.has_more);
    assert!(store.syncs(None, 3).await.expect("past the end").items.is_empty());
    let previews = store.syncs(Some("pr-1"), 0).await.expect("filtered");
    assert_eq!(previews.items.len(), 15);
    assert!(!previews.has_more);
    assert!(previews.items.iter().all(|sync| sync.env == "pr-1"));
    let newest = &first.items[0];
    assert_eq!(store.sync(newest.id).await.expect("one sync").as_ref(), Some(newest));
    assert_eq!(store.sync(newest.id + 1000).await.expect("no such sync"), None);
    let ids: Vec<i64> = first.items.iter().map(|sync| sync.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "ids fall with age: {ids:?}");
}

async fn history_keeps_the_newest_syncs_per_environment(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    for n in 0..30 {
        store.record_sync(&record("production", n), 7).await.expect("record");
        store.record_sync(&record("pr-1", n), 1000).await.expect("record");
    }
    let kept: Vec<i64> =
        store.syncs(Some("production"), 0).await.expect("page").items.iter().map(|sync| sync.started_ms).collect();
    assert_eq!(kept, (23..30).rev().collect::<Vec<_>>());
    assert_eq!(store.syncs(Some("pr-1"), 1).await.expect("page").items.len(), 10, "other environments keep theirs");
    store.record_sync(&record("staging", 1), 0).await.expect("keep 0");
    store.record_sync(&record("staging", 2), 0).await.expect("keep 0 again");
    let staging = store.syncs(Some("staging"), 0).await.expect("page").items;
    assert_eq!(staging.iter().map(|sync| sync.started_ms).collect::<Vec<_>>(), [2], "at least one is kept");
}

async fn unauthenticated_deliveries_are_capped_apart_from_the_others(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let delivery = |n: i64, authenticated: bool| Delivery {
        received_ms: n,
        forge: "github".to_owned(),
        event: "push".to_owned(),
        accepted: authenticated,
        reason: format!("reason {n}"),
        authenticated,
    };
    for n in 0..5 {
        store.record_delivery(&delivery(n, true), 3).await.expect("record");
    }
    for n in 5..(5 + i64::from(KEEP_UNAUTHENTICATED) + 40) {
        store.record_delivery(&delivery(n, false), 3).await.expect("record");
    }
    let mut all = Vec::new();
    for page in 0.. {
        let page = store.deliveries(page).await.expect("page");
        all.extend(page.items);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(all.iter().filter(|d| !d.authenticated).count(), KEEP_UNAUTHENTICATED as usize);
    assert_eq!(all.first(), Some(&delivery(4 + i64::from(KEEP_UNAUTHENTICATED) + 40, false)), "newest first");
    let signed: Vec<i64> = all.iter().filter(|d| d.authenticated).map(|d| d.received_ms).collect();
    assert_eq!(signed, [4, 3, 2], "a flood of forged deliveries does not push out the real ones");
}

async fn delivery_ids_are_remembered_for_a_day(engine: Engine) {
    let test = TestStore::new(engine);
    let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    {
        let store = test.connect().await;
        assert!(store.first_delivery("github", id, 1_000).await.expect("first"));
        assert!(!store.first_delivery("github", id, 2_000).await.expect("again"));
        assert!(store.first_delivery("gitea", id, 2_000).await.expect("another forge"));
    }
    let store = test.connect().await;
    assert!(!store.first_delivery("github", id, DELIVERY_MEMORY_MS).await.expect("reconnected"), "not forgotten");
    assert!(store.first_delivery("github", id, 1_000 + DELIVERY_MEMORY_MS).await.expect("a day on"));
    assert!(!store.first_delivery("gitea", id, 1_500 + DELIVERY_MEMORY_MS).await.expect("gitea's within its day"));
    assert!(store.first_delivery("gitea", id, 2_000 + DELIVERY_MEMORY_MS).await.expect("gitea's a day on"));
}

/// A signed GitHub push's row in the history, with `reason`.
fn signed_push(reason: &str) -> Delivery {
    Delivery {
        received_ms: 1_000,
        forge: "github".to_owned(),
        event: "push".to_owned(),
        accepted: true,
        reason: reason.to_owned(),
        authenticated: true,
    }
}

/// A signed delivery's id and body digest, remembered; a replay is recorded with `reason`.
fn remember_write(id: &str, body: &str, reason: &str) -> DeliveryWrite {
    DeliveryWrite::Remember {
        forge: "github".to_owned(),
        keys: vec![format!("id:{id}"), format!("sha256:{body}")],
        now_ms: 1_000,
        if_seen: Some(DeliveryRecord { delivery: signed_push(reason), keep: 1000 }),
    }
}

fn record_write(reason: &str, keep: u32) -> DeliveryWrite {
    DeliveryWrite::Record(DeliveryRecord { delivery: signed_push(reason), keep })
}

async fn all_deliveries(store: &Store) -> Vec<Delivery> {
    let mut all = Vec::new();
    for page in 0.. {
        let page = store.deliveries(page).await.expect("page");
        all.extend(page.items);
        if !page.has_more {
            break;
        }
    }
    all
}

/// Many deliveries at once share commits (the engine's writer takes whatever waits): each is answered as if alone,
/// a replay among them (its id again, or its body under a new id) is refused whichever commit it lands in, and every
/// record is kept, a replay's included.
async fn concurrent_deliveries_are_each_answered_and_recorded_and_replays_among_them_refused(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let replayed = |n: usize| [remember_write(&format!("d{n}"), &format!("b{n}"), &format!("replay of {n}"))];
    let under_a_new_id = |n: usize| [remember_write(&format!("new-{n}"), &format!("b{n}"), &format!("body of {n}"))];
    // The first wave: 60 deliveries, 10 replays of their ids and 10 of their bodies, and 30 other records, all at
    // once (originals and replays race in one commit or the next); the second: replays of what the first remembered.
    let mut first_wave: Vec<DeliveryWrite> = (0..60).flat_map(replayed).collect();
    first_wave.extend((0..10).flat_map(replayed));
    first_wave.extend((10..20).flat_map(under_a_new_id));
    first_wave.extend((0..30).map(|n| record_write(&format!("record {n}"), 1000)));
    let answers = futures_util::future::join_all(first_wave.iter().map(|write| store.write_delivery(write.clone())));
    let answers: Vec<bool> = answers.await.into_iter().map(|answer| answer.expect("written")).collect();
    for n in 0..20 {
        // Whichever of a delivery and its replay came first is the new one.
        let of_n = [answers[n], answers[60 + n]];
        assert_eq!(of_n.iter().filter(|first| **first).count(), 1, "delivery {n} and its replay: {of_n:?}");
    }
    assert!(answers[20..60].iter().all(|first| *first), "deliveries without a replay are new");
    assert!(answers[80..].iter().all(|recorded| *recorded));
    let second_wave: Vec<DeliveryWrite> =
        (40..50).flat_map(replayed).chain((50..60).flat_map(under_a_new_id)).collect();
    let answers = futures_util::future::join_all(second_wave.iter().map(|write| store.write_delivery(write.clone())));
    for answer in answers.await {
        assert!(!answer.expect("written"), "a replay after the commit");
    }
    let reasons: Vec<String> = all_deliveries(&store).await.into_iter().map(|delivery| delivery.reason).collect();
    assert_eq!(reasons.len(), 30 + 20 + 20, "every record and every replay: {reasons:?}");
    for n in 0..30 {
        assert!(reasons.contains(&format!("record {n}")), "record {n}: {reasons:?}");
    }
    let refused = reasons.iter().filter(|reason| reason.starts_with("replay of") || reason.starts_with("body of"));
    assert_eq!(refused.count(), 40);
    // The ids are in the database: another handle (a restart) refuses them too.
    drop(store);
    let store = test.connect().await;
    assert!(!store.write_delivery(remember_write("d3", "other body", "again")).await.expect("written"), "the id");
    assert!(!store.write_delivery(remember_write("other id", "b3", "again")).await.expect("written"), "the body");
    assert!(store.write_delivery(remember_write("d100", "b100", "new")).await.expect("written"));
}

/// One batch, written by the engine in one transaction: each write answered in its place, a key twice in the batch
/// taken by its first write only, the history trimmed to what its records keep.
async fn a_batch_of_delivery_writes_answers_each_in_order(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let batch = vec![
        remember_write("a", "x", "replay of a"),
        record_write("recorded", 1000),
        remember_write("a", "y", "replay of a under its id"),
        remember_write("b", "x", "replay of a's body"),
        remember_write("c", "z", "replay of c"),
    ];
    assert_eq!(store.write_deliveries(batch).await.expect("written"), [true, true, false, false, true]);
    let reasons: Vec<String> = all_deliveries(&store).await.into_iter().map(|delivery| delivery.reason).collect();
    assert_eq!(reasons, ["replay of a's body", "replay of a under its id", "recorded"], "newest first");
    // Each key of a refused delivery is remembered all the same: "b" and "y" are known now.
    let batch = vec![
        remember_write("b", "new", "b again"),
        remember_write("new", "y", "y again"),
        remember_write("d", "w", ""),
    ];
    assert_eq!(store.write_deliveries(batch).await.expect("written"), [false, false, true]);
    store.write_deliveries((0..5).map(|n| record_write(&format!("{n}"), 3)).collect()).await.expect("written");
    let reasons: Vec<String> = all_deliveries(&store).await.into_iter().map(|delivery| delivery.reason).collect();
    assert_eq!(reasons, ["4", "3", "2"], "the batch keeps the newest 3");
}

async fn a_pin_is_kept_until_unpinned_and_rollback_targets_are_synced_commits(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    assert_eq!(store.pin_of("production").await.expect("none yet"), None);
    store.pin("production", "abc123", 10).await.expect("pin");
    store.pin("production", "def456", 20).await.expect("pin again");
    assert_eq!(store.pin_of("production").await.expect("pinned"), Some(("def456".to_owned(), 20)));
    assert_eq!(store.pin_of("staging").await.expect("other env"), None);
    store.unpin("production").await.expect("unpin");
    assert_eq!(store.pin_of("production").await.expect("unpinned"), None);

    store
        .record_sync(&SyncRecord { commit_sha: Some("a1b2c3".to_owned()), ..record("production", 1) }, 100)
        .await
        .expect("synced");
    let failed =
        SyncRecord { commit_sha: Some("b1b2c3".to_owned()), outcome: SyncOutcome::Failed, ..record("production", 2) };
    store.record_sync(&failed, 100).await.expect("failed");
    assert_eq!(store.synced_commit("production", "a1").await.expect("query"), Some("a1b2c3".to_owned()));
    assert_eq!(store.synced_commit("production", "b1").await.expect("query"), None, "a failed sync is no target");
    assert_eq!(store.synced_commit("staging", "a1").await.expect("query"), None, "another environment's");
    assert_eq!(store.synced_commit("production", "%").await.expect("query"), None, "only hex is looked up");
}

async fn placements_are_remembered_and_forgotten_with_their_environment(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let kubernetes = Target { context: Some("prod".to_owned()), ..Target::of(BackendKind::Kubernetes) };
    store.place("production", &Target::of(BackendKind::Docker), 1).await.expect("place");
    store.place("production", &kubernetes, 2).await.expect("move");
    store.place("staging", &Target::of(BackendKind::Docker), 3).await.expect("place staging");
    assert_eq!(store.placement("production").await.expect("read"), Some(kubernetes));
    store
        .remember_environments(&[KnownEnvironment {
            name: "production".into(),
            project: "shop".into(),
            branch: "main".into(),
        }])
        .await
        .expect("remember");
    store.forget_environment("production").await.expect("forget");
    assert_eq!(store.placement("production").await.expect("read"), None);
    assert!(store.known_environments().await.expect("list").is_empty());
    assert_eq!(store.placement("staging").await.expect("read"), Some(Target::of(BackendKind::Docker)));
}

async fn a_scaling_rule_keeps_the_time_it_appeared_until_it_goes(engine: Engine) {
    let test = TestStore::new(engine);
    {
        let store = test.connect().await;
        let first = store.scaling_rules_appeared("production", &names(&["web"]), 100).await.expect("first");
        assert_eq!(first, BTreeMap::from([("web".to_owned(), 100)]));
        store.scaling_rules_appeared("staging", &names(&["web"]), 150).await.expect("another environment");
    }
    let store = test.connect().await;
    let later = store.scaling_rules_appeared("production", &names(&["web", "api"]), 200).await.expect("later");
    assert_eq!(later, BTreeMap::from([("api".to_owned(), 200), ("web".to_owned(), 100)]));
    store.scaling_rules_appeared("production", &names(&["api"]), 300).await.expect("web's rule removed");
    let again = store.scaling_rules_appeared("production", &names(&["web", "api"]), 400).await.expect("web's back");
    assert_eq!(again, BTreeMap::from([("api".to_owned(), 200), ("web".to_owned(), 400)]));
    let staging = store.scaling_rules_appeared("staging", &names(&["web"]), 500).await.expect("staging untouched");
    assert_eq!(staging, BTreeMap::from([("web".to_owned(), 150)]));
    assert!(store.scaling_rules_appeared("staging", &[], 600).await.expect("no rules").is_empty());
}

async fn an_autoscale_decision_is_remembered_until_its_app_loses_its_target(engine: Engine) {
    let test = TestStore::new(engine);
    {
        let store = test.connect().await;
        store.record_autoscale_decision("production", "web", 3, 100).await.expect("decided");
        store.record_autoscale_decision("production", "web", 4, 200).await.expect("decided again");
        store.record_autoscale_decision("staging", "web", 2, 200).await.expect("another environment");
    }
    let store = test.connect().await;
    let decided = store.autoscale_decisions("production", &names(&["web", "api"])).await.expect("read");
    assert_eq!(decided, BTreeMap::from([("web".to_owned(), 4)]));
    assert!(store.autoscale_decisions("production", &names(&["api"])).await.expect("web lost it").is_empty());
    assert!(store.autoscale_decisions("production", &names(&["web"])).await.expect("and it is gone").is_empty());
    let staging = store.autoscale_decisions("staging", &names(&["web"])).await.expect("staging untouched");
    assert_eq!(staging, BTreeMap::from([("web".to_owned(), 2)]));
}

async fn the_environments_list_keeps_its_order(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let env = |name: &str, project: &str| KnownEnvironment {
        name: name.to_owned(),
        project: project.to_owned(),
        branch: format!("{name}-branch"),
    };
    let list = [env("staging", "shop-staging"), env("production", "shop"), env("pr-7", "")];
    store.remember_environments(&list).await.expect("remember");
    assert_eq!(store.known_environments().await.expect("read"), list);
    store.remember_environments(&list[1..]).await.expect("replace");
    assert_eq!(store.known_environments().await.expect("read"), list[1..]);
}

async fn pull_requests_are_replaced_as_a_whole(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let pr = |number: u64| PullRequest {
        number,
        title: format!("change {number}"),
        author: "ada".to_owned(),
        head_sha: format!("{number:040x}"),
        head_branch: format!("feature-{number}"),
        from_fork: number.is_multiple_of(2),
        labels: vec!["preview".to_owned()],
        author_trusted: true,
        approved_sha: Some("abc".to_owned()),
        pushed_ms: 1_000 + number as i64,
    };
    store.remember_pull_requests(&[pr(9), pr(2)]).await.expect("remember");
    assert_eq!(store.pull_requests().await.expect("read"), [pr(2), pr(9)], "by number");
    store.remember_pull_requests(&[pr(3)]).await.expect("replace");
    assert_eq!(store.pull_requests().await.expect("read"), [pr(3)]);
}

async fn two_handles_on_one_database_share_the_digest_key(engine: Engine) {
    let test = TestStore::new(engine);
    let (first, second) = (test.connect().await, test.connect().await);
    let (a, b) = tokio::join!(first.digest_key([1; 32]), second.digest_key([2; 32]));
    let (a, b) = (a.expect("first key"), b.expect("second key"));
    assert_eq!(a, b, "both replicas compute the same digests");
    assert!(a == [1; 32] || a == [2; 32]);
    assert_eq!(second.digest_key([3; 32]).await.expect("later"), a, "the stored key stays");
}

async fn of_two_lease_swaps_from_one_version_exactly_one_wins(engine: Engine) {
    let test = TestStore::new(engine);
    let (first, second) = (test.connect().await, test.connect().await);
    let lease = |holder: &str, renewed_ms: i64, transitions: i64| LeaseRecord {
        holder: holder.to_owned(),
        acquired_ms: 1_000,
        renewed_ms,
        duration_ms: 15_000,
        transitions,
    };
    assert_eq!(first.lease("leader").await.expect("none yet"), None);
    let (for_a, for_b) = (lease("replica-a", 1_000, 0), lease("replica-b", 1_000, 0));
    let (a, b) = tokio::join!(first.swap_lease("leader", None, &for_a), second.swap_lease("leader", None, &for_b));
    assert!(a.expect("a") ^ b.expect("b"), "exactly one creates the lease");
    let (held, version) = first.lease("leader").await.expect("read").expect("a lease");
    assert_eq!(version, 1);
    for round in 0..20 {
        let (_, version) = first.lease("leader").await.expect("read").expect("a lease");
        let (for_a, for_b) = (lease("replica-a", 2_000 + round, round), lease("replica-b", 2_000 + round, round));
        let (a, b) = tokio::join!(
            first.swap_lease("leader", Some(version), &for_a),
            second.swap_lease("leader", Some(version), &for_b)
        );
        assert!(a.expect("a") ^ b.expect("b"), "round {round}: exactly one of two swaps from version {version} wins");
    }
    let (last, version) = second.lease("leader").await.expect("read").expect("a lease");
    assert_eq!(version, 21);
    assert_eq!((last.renewed_ms, last.transitions), (2_019, 19));
    assert!(!first.swap_lease("leader", Some(3), &held).await.expect("stale"), "a stale version loses");
    assert_eq!(second.lease("leader").await.expect("read").map(|(_, version)| version), Some(21));
    assert_eq!(first.lease("another").await.expect("read"), None);
}

async fn each_request_is_taken_once_by_concurrent_takers(engine: Engine) {
    let test = TestStore::new(engine);
    let (producer, first, second) = (test.connect().await, test.connect().await, test.connect().await);
    let total = 200;
    let requests: Vec<Request> = (0..total).map(|n| Request::Pushed { branch: format!("branch-{n}") }).collect();
    let produce = async {
        for (n, request) in requests.iter().enumerate() {
            producer.request(request, n as i64).await.expect("queue");
            if n % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let ((), mut a, mut b) = tokio::join!(produce, take_repeatedly(&first), take_repeatedly(&second));
    a.extend(second.take_requests().await.expect("the rest"));
    let index = |request: &Request| match request {
        Request::Pushed { branch } => branch.trim_start_matches("branch-").parse::<usize>().expect("a number"),
        other => panic!("unexpected {other:?}"),
    };
    for taken in [&a, &b] {
        let order: Vec<usize> = taken.iter().map(index).collect();
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "each taker gets them oldest first: {order:?}");
    }
    a.append(&mut b);
    let mut all: Vec<usize> = a.iter().map(index).collect();
    all.sort();
    assert_eq!(all, (0..total).collect::<Vec<_>>(), "every request taken exactly once");
    let sync = Request::Sync { env: "production".to_owned(), trigger: Trigger::Api, destroy: false };
    first.request(&sync, 1).await.expect("queue");
    let pushed = Request::Pushed { branch: "staging".to_owned() };
    first.request(&pushed, 2).await.expect("queue");
    assert_eq!(second.take_requests().await.expect("take"), [sync, pushed]);
    assert!(first.take_requests().await.expect("none left").is_empty());
}

/// Takes requests 40 times over, as a leader's loop would.
async fn take_repeatedly(store: &Store) -> Vec<Request> {
    let mut taken = Vec::new();
    for _ in 0..40 {
        taken.extend(store.take_requests().await.expect("take"));
        tokio::task::yield_now().await;
    }
    taken
}

async fn statuses_are_published_replaced_and_retained(engine: Engine) {
    let test = TestStore::new(engine);
    let (leader, follower) = (test.connect().await, test.connect().await);
    leader.publish_status("production", r#"{"health":"ok"}"#, 1).await.expect("publish");
    leader.publish_status("staging", r#"{"health":"down"}"#, 2).await.expect("publish");
    leader.publish_status("production", r#"{"health":"degraded"}"#, 3).await.expect("replace");
    let read = follower.published_statuses().await.expect("read");
    let summary: Vec<(&str, &str, i64)> =
        read.iter().map(|status| (status.env.as_str(), status.body.as_str(), status.published_ms)).collect();
    assert_eq!(summary, [("production", r#"{"health":"degraded"}"#, 3), ("staging", r#"{"health":"down"}"#, 2)]);
    leader.retain_statuses(&names(&["staging", "pr-1"])).await.expect("retain");
    let left: Vec<String> = follower.published_statuses().await.expect("read").into_iter().map(|s| s.env).collect();
    assert_eq!(left, ["staging"]);
    leader.retain_statuses(&[]).await.expect("retain none");
    assert!(follower.published_statuses().await.expect("read").is_empty());
}

async fn the_schema_refuses_an_unknown_outcome_word(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    store.ping().await.expect("ping");
    let insert = |trigger: &str, outcome: &str| {
        format!(
            "INSERT INTO syncs (env, trigger, started_ms, finished_ms, outcome, summary, diff)
             VALUES ('production', '{trigger}', 1, 2, '{outcome}', '', '')"
        )
    };
    assert!(test.raw(&insert("poll", "synced")), "a known word is taken (the statement itself is right)");
    assert!(!test.raw(&insert("poll", "exploded")), "the schema checks the outcome's word");
    assert!(!test.raw(&insert("whim", "synced")), "and the trigger's");
    assert_eq!(store.syncs(None, 0).await.expect("history").items.len(), 1);
}

async fn every_trigger_and_outcome_reads_back_as_written(engine: Engine) {
    let test = TestStore::new(engine);
    let store = test.connect().await;
    let mut written = Vec::new();
    for (n, trigger) in Trigger::ALL.iter().enumerate() {
        for (m, outcome) in SyncOutcome::ALL.iter().enumerate() {
            let sync =
                SyncRecord { trigger: *trigger, outcome: *outcome, ..record("production", (n * 100 + m) as i64) };
            let id = store.record_sync(&sync, 10_000).await.unwrap_or_else(|e| panic!("{trigger} {outcome}: {e}"));
            written.push(SyncRecord { id, ..sync });
        }
    }
    for sync in &written {
        assert_eq!(store.sync(sync.id).await.expect("read").as_ref(), Some(sync));
    }
}

/// Runs `work` with a fresh store of the engine.
async fn with_store<F, Fut>(engine: Engine, work: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let test = TestStore::new(engine);
    work(test.connect().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_location_and_errors_never_show_the_password() {
    let location = StoreLocation::parse("postgres://railyard:canary-5ecret@127.0.0.1:1/none").expect("parse");
    assert!(!format!("{location:?}").contains("canary-5ecret"), "{location:?}");
    assert!(!location.shown().contains("canary-5ecret"));
    // Nothing listens on port 1: the error names the place, not the password, and counts as unavailable.
    let error = Store::connect(&location, None).await.expect_err("nothing listens there");
    assert!(error.is_unavailable(), "{error}");
    assert!(!error.to_string().contains("canary-5ecret"), "{error}");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    with_store(Engine::Postgres, |store| async move {
        assert!(!format!("{:?}", store.location()).contains(SUPERUSER_PASSWORD));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_read_from_the_url() {
    // The test server speaks no TLS: `prefer` falls back to plain, `require` refuses, and an unknown mode is named.
    let cluster = PostgresCluster::shared();
    let database = cluster.database();
    let url = |mode: &str| format!("postgres://railyard@127.0.0.1:{}/{database}?sslmode={mode}", cluster.port());
    let password = || Some(SUPERUSER_PASSWORD.to_owned());
    let preferred = Store::connect(&StoreLocation::Postgres(url("prefer")), password()).await.expect("prefer");
    preferred.ping().await.expect("plain after all");
    let required = Store::connect(&StoreLocation::Postgres(url("require")), password()).await.expect_err("require");
    assert!(required.to_string().contains("TLS"), "{required}");
    let unknown = Store::connect(&StoreLocation::Postgres(url("sometimes")), password()).await.expect_err("unknown");
    assert!(unknown.to_string().contains("sslmode"), "{unknown}");
    assert!(!unknown.is_unavailable(), "a wrong URL is no outage: {unknown}");
}

#[test]
fn sslmode_require_speaks_tls_and_checks_the_certificate_against_the_trusted_roots() {
    let (cluster, ca) = PostgresCluster::start_with_tls();
    let sqlite = TestStore::new(Engine::Sqlite);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async { fill(&sqlite.connect().await).await });
    let from = sqlite.location.shown();
    let to = |database: &str| format!("postgres://railyard@127.0.0.1:{}/{database}?sslmode=require", cluster.port());
    let migrate_with = |to: &str, trusted: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
        command.args(["store", "migrate", "--from", &from, "--to", to]).env("PGPASSWORD", SUPERUSER_PASSWORD);
        command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        if let Some(ca) = trusted {
            command.env("SSL_CERT_FILE", ca);
        }
        let output = command.output().expect("railyard runs");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let database = cluster.database();
    let (ok, output) = migrate_with(&to(&database), None);
    assert!(!ok, "a certificate of an unknown CA is refused");
    assert!(output.contains("TLS") || output.contains("certificate"), "{output}");
    let (ok, output) = migrate_with(&to(&database), Some(&ca));
    assert!(ok, "with its CA trusted: {output}");
    let ssl_in_use = cluster.psql(&database, "SELECT count(*) FROM syncs");
    assert_ne!(ssl_in_use, "0", "the copy arrived over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_error_is_not_an_outage() {
    let test = TestStore::new(Engine::Postgres);
    let store = test.connect().await;
    let StoreLocation::Postgres(url) = &test.location else { unreachable!() };
    let database = url.rsplit('/').next().and_then(|tail| tail.split('?').next()).unwrap_or_default();
    // A column the engine fills is made to refuse: the next write fails as a refusal, not as an outage.
    PostgresCluster::shared().psql(database, "ALTER TABLE pins ADD CONSTRAINT short CHECK (length(commit_sha) < 5)");
    let error = store.pin("production", "abcdef0123", 1).await.expect_err("refused");
    assert!(!error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("short"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_goes_away_gives_unavailable_errors_and_the_same_store_recovers() {
    let cluster = PostgresCluster::start();
    let database = cluster.database();
    let location = StoreLocation::Postgres(cluster.url(&database));
    let store = Store::connect(&location, Some(SUPERUSER_PASSWORD.to_owned())).await.expect("connect");
    store.record_sync(&record("production", 1), 100).await.expect("before the outage");
    // Several connections in the pool, so that every one of them meets the outage.
    let pings = futures_util::future::join_all((0..4).map(|_| store.ping())).await;
    assert!(pings.iter().all(Result::is_ok));

    cluster.stop();
    for attempt in 0..3 {
        let error =
            store.syncs(None, 0).await.err().unwrap_or_else(|| panic!("attempt {attempt}: answered while down"));
        assert!(error.is_unavailable(), "attempt {attempt}: {error}");
        assert!(!error.to_string().contains(SUPERUSER_PASSWORD), "{error}");
        let error = store.record_sync(&record("production", 2), 100).await.expect_err("a write while down");
        assert!(error.is_unavailable(), "{error}");
    }
    let error = store.ping().await.expect_err("ping while down");
    assert!(error.is_unavailable(), "{error}");

    cluster.start_again();
    let mut recovered = None;
    for _ in 0..50 {
        match store.record_sync(&record("production", 3), 100).await {
            Ok(id) => {
                recovered = Some(id);
                break;
            }
            Err(error) => {
                assert!(error.is_unavailable(), "{error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered.is_some(), "the store works again once the server is back");
    let history: Vec<i64> = store.syncs(None, 0).await.expect("read").items.iter().map(|s| s.started_ms).collect();
    assert_eq!(history, [3, 1], "nothing written before the outage was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_an_empty_database_both_migrate_it_once() {
    let cluster = PostgresCluster::shared();
    let database = cluster.database();
    let location = StoreLocation::Postgres(cluster.url(&database));
    let password = || Some(SUPERUSER_PASSWORD.to_owned());
    let connections: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| Store::connect(&location, password()))).await;
    for connection in &connections {
        if let Err(error) = connection {
            panic!("a replica failed to start: {error}");
        }
    }
    let applied = cluster.psql(&database, "SELECT count(*) || ' ' || count(DISTINCT version) FROM schema_migrations");
    let (rows, versions) = applied.split_once(' ').expect("two counts");
    assert!(rows == versions && rows != "0", "each migration applied once: {applied}");
    let stores: Vec<Store> = connections.into_iter().flatten().collect();
    stores[0].record_sync(&record("production", 1), 10).await.expect("write on one");
    assert_eq!(stores[3].syncs(None, 0).await.expect("read on another").items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_railyard_is_refused() {
    let cluster = PostgresCluster::shared();
    let database = cluster.database();
    let location = StoreLocation::Postgres(cluster.url(&database));
    drop(Store::connect(&location, Some(SUPERUSER_PASSWORD.to_owned())).await.expect("migrate"));
    cluster.psql(&database, "INSERT INTO schema_migrations (version) VALUES (99)");
    let error = Store::connect(&location, Some(SUPERUSER_PASSWORD.to_owned())).await.expect_err("refused");
    assert!(error.to_string().contains("schema 99"), "{error}");
    assert!(!error.is_unavailable());
}

/// A history and every other table filled through the trait, as a daemon leaves them.
async fn fill(store: &Store) {
    for n in 0..50 {
        let env = ["production", "staging", "pr-3"][n as usize % 3];
        store.record_sync(&record(env, n), 12).await.expect("sync");
        store
            .record_delivery(
                &Delivery {
                    received_ms: n,
                    forge: "github".into(),
                    event: "push".into(),
                    accepted: n % 2 == 0,
                    reason: String::new(),
                    authenticated: n % 5 != 0,
                },
                30,
            )
            .await
            .expect("delivery");
    }
    store
        .remember_environments(&[
            KnownEnvironment { name: "production".into(), project: "shop".into(), branch: "main".into() },
            KnownEnvironment { name: "staging".into(), project: "shop-staging".into(), branch: "staging".into() },
        ])
        .await
        .expect("environments");
    store.pin("staging", "abc", 5).await.expect("pin");
    store.place("production", &Target::of(BackendKind::Docker), 6).await.expect("place");
    store.scaling_rules_appeared("production", &names(&["web"]), 7).await.expect("rules");
    store.record_autoscale_decision("production", "web", 4, 8).await.expect("decision");
    store.first_delivery("github", "delivery-1", 9).await.expect("delivery id");
    store.digest_key([7; 32]).await.expect("key");
    store
        .swap_lease(
            "leader",
            None,
            &LeaseRecord { holder: "a".into(), acquired_ms: 1, renewed_ms: 2, duration_ms: 3, transitions: 4 },
        )
        .await
        .expect("lease");
    store.request(&Request::Pushed { branch: "main".to_owned() }, 10).await.expect("request");
    store.publish_status("production", "{}", 11).await.expect("status");
    let run = job_run("migrate", 12, true, railyard::backend::JobTrigger::Schedule { at: 12 });
    store.record_job_run(&run, railyard::model::job::KeepRuns::default()).await.expect("job run");
    let entry = audit_entry(13, "ops", true, railyard::store::AuditOutcome::Accepted);
    store.record_audit(&entry, i64::MAX).await.expect("audit");
}

fn migrate(from: &str, to: &str, extra: &[&str], password: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command.args(["store", "migrate", "--from", from, "--to", to]).args(extra).env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().expect("railyard runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_copies_a_sqlite_history_into_postgres_and_back() {
    let sqlite = TestStore::new(Engine::Sqlite);
    let source = sqlite.connect().await;
    fill(&source).await;
    let cluster = PostgresCluster::shared();
    let database = cluster.database();
    let url = cluster.url(&database);
    let from = sqlite.location.shown();
    let (ok, output) = migrate(&from, &url, &[], Some(SUPERUSER_PASSWORD));
    assert!(ok, "{output}");
    assert!(output.contains("copied"), "it says what it did: {output}");

    let postgres = Store::connect(&StoreLocation::Postgres(url.clone()), Some(SUPERUSER_PASSWORD.to_owned()))
        .await
        .expect("connect");
    assert_eq!(postgres.dump().await.expect("dump"), source.dump().await.expect("dump"), "every row, ids kept");
    for env in [None, Some("production"), Some("pr-3")] {
        for page in 0..3 {
            let (a, b) = (source.syncs(env, page).await.expect("sqlite"), postgres.syncs(env, page).await.expect("pg"));
            assert_eq!((a.items, a.has_more), (b.items, b.has_more), "{env:?} page {page} reads the same");
        }
    }
    assert_eq!(postgres.deliveries(0).await.expect("pg").items, source.deliveries(0).await.expect("sqlite").items);
    assert_eq!(postgres.digest_key([0; 32]).await.expect("key"), [7; 32], "the digest key came along");
    let next = postgres.record_sync(&record("production", 99), 12).await.expect("a new sync");
    let newest_copied = source.syncs(None, 0).await.expect("sqlite").items[0].id;
    assert!(next > newest_copied, "new ids continue after the copied ones");

    let (ok, output) = migrate(&from, &url, &[], Some(SUPERUSER_PASSWORD));
    assert!(!ok, "a store that holds data is refused");
    assert!(output.contains("not empty") && output.contains("empty store"), "{output}");

    // And back, into a new SQLite directory.
    let back = tempfile::tempdir().expect("tempdir");
    let back_location = format!("sqlite:{}", back.path().display());
    let password_file = back.path().join("pg-password");
    std::fs::write(&password_file, format!("{SUPERUSER_PASSWORD}\n")).expect("write the password file");
    let password_file = password_file.display().to_string();
    let (ok, output) = migrate(&url, &back_location, &["--from-password-file", &password_file], None);
    assert!(ok, "{output}");
    let returned = Store::connect(&StoreLocation::Sqlite(back.path().to_path_buf()), None).await.expect("open");
    assert_eq!(returned.dump().await.expect("dump"), postgres.dump().await.expect("dump"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_never_shows_the_password() {
    let canary = "canary-Pw-8c1f";
    let cluster = PostgresCluster::shared();
    let database = cluster.database();
    cluster.psql("postgres", &format!("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'canary') THEN CREATE ROLE canary LOGIN PASSWORD '{canary}'; END IF; END $$"));
    cluster.psql("postgres", &format!("ALTER DATABASE {database} OWNER TO canary"));
    let sqlite = TestStore::new(Engine::Sqlite);
    fill(&sqlite.connect().await).await;
    let from = sqlite.location.shown();
    let with_password = format!("postgres://canary:{canary}@127.0.0.1:{}/{database}?sslmode=disable", cluster.port());
    let (ok, output) = migrate(&from, &with_password, &[], None);
    assert!(ok, "{}", output.replace(canary, "<canary>"));
    assert!(!output.contains(canary), "the output shows the password: {output}");
    for (to, password) in [
        // Refused: the target holds data now.
        (with_password.clone(), None),
        // A wrong password in the URL.
        (format!("postgres://canary:{canary}-wrong@127.0.0.1:{}/{database}", cluster.port()), None),
        // The password from PGPASSWORD, refused by the server.
        (format!("postgres://canary@127.0.0.1:{}/{database}", cluster.port()), Some(format!("{canary}-wrong"))),
        // Nobody listens.
        (format!("postgres://canary:{canary}@127.0.0.1:1/{database}"), None),
    ] {
        let (ok, output) = migrate(&from, &to, &[], password.as_deref());
        assert!(!ok, "{}", output.replace(canary, "<canary>"));
        assert!(!output.contains(canary), "an error shows the password: {output}");
        assert!(output.contains("canary:***@") || output.contains("canary@"), "it names the store: {output}");
    }
}
