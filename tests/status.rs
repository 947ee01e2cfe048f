//! What an environment says about itself, the same everywhere it is said (issue 23): a pin by a rollback and an
//! invalid newest commit each have a state of their own in the API, the pages, the overview and the metrics, and a
//! rollback is told from a manual sync in the history. On the in-memory backend with paused time.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use railyard::daemon::SyncStatus;
use railyard::model::short_sha;
use railyard::outcome::{SyncOutcome, Trigger};

use crate::support::yard::Yard;

const PROJECT: &str = "kind: Project\nname: shop\n";

fn app(image: &str) -> String {
    format!("kind: App\nname: web\nimage: {image}\nreplicas: 1\n")
}

#[tokio::test(start_paused = true)]
async fn a_pinned_environment_says_pinned_in_the_api_the_pages_the_overview_and_the_metrics() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    let first = yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let first = first.commit.expect("a commit").sha;
    yard.write("apps/web.yaml", &app("web:2"));
    yard.push("web: two");
    yard.until("web:2", |_| yard.running_image().as_deref() == Some("web:2")).await;

    yard.daemon.rollback("production", &first[..8], false).await.expect("rollback");
    yard.until("the pinned commit", |_| yard.running_image().as_deref() == Some("web:1")).await;
    // What the branch's head would change is planned against what runs after the rollback, not before it.
    let planned = yard
        .until("the head's plan against the rolled-back state", |env| {
            env.pinned
                .as_ref()
                .and_then(|pin| pin.head_plan.as_deref())
                .is_some_and(|plan| plan.contains("1 to update"))
        })
        .await;
    assert_eq!(planned.sync_status, SyncStatus::Pinned);
    yard.write("apps/web.yaml", &app("web:3"));
    let head = yard.push("web: three");
    let pinned = yard
        .until("the head planned, not applied", |env| {
            env.pinned.as_ref().is_some_and(|pin| pin.head.as_ref().is_some_and(|h| h.sha == head))
        })
        .await;
    assert_eq!(pinned.sync_status, SyncStatus::Pinned, "not `synced`: git's newest commit is not applied");

    let (_, api) = yard.http("GET", "/api/v1/environments/production", None).await;
    let api: serde_json::Value = serde_json::from_str(&api).expect("JSON");
    assert_eq!(api["syncStatus"], "pinned");
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("badge pinned"), "the badge: {page}");
    assert!(!page.contains("what runs matches git"), "what runs does not match git's newest commit: {page}");
    let waits = format!("the branch's newer commit <code>{}</code> waits until unpinned", short_sha(&head));
    assert!(page.contains(&waits), "{page}");
    let (_, overview) = yard.http("GET", "/", None).await;
    assert!(overview.contains(&format!("Pinned to <code>{}</code>", short_sha(&first))), "{overview}");
    assert!(overview.contains(&format!("the branch is at <code>{}</code>, not applied", short_sha(&head))));
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(metrics.contains("railyard_sync_status{env=\"production\",status=\"pinned\"} 1"), "{metrics}");
    assert!(metrics.contains("railyard_sync_status{env=\"production\",status=\"synced\"} 0"), "{metrics}");

    // The rollback's apply is a trigger of its own, not a manual sync's `api`.
    let history = yard.history();
    let rollback = history.iter().find(|sync| sync.commit_sha.as_deref() == Some(first.as_str())).expect("recorded");
    assert_eq!((rollback.trigger, rollback.outcome), (Trigger::Rollback, SyncOutcome::Synced), "{history:#?}");
    let (_, page) = yard.http("GET", "/env/production/syncs", None).await;
    assert!(page.contains("<td>rollback</td>"), "the history page names it: {page}");

    yard.daemon.unpin("production").await.expect("unpin");
    let synced = yard.until("the branch's head again", |env| env.sync_status == SyncStatus::Synced).await;
    assert_eq!(synced.commit.map(|c| c.sha), Some(head));
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(metrics.contains("railyard_sync_status{env=\"production\",status=\"synced\"} 1"), "{metrics}");
    assert!(metrics.contains("railyard_sync_status{env=\"production\",status=\"pinned\"} 0"), "{metrics}");
}

/// The log lines the daemon writes while the guard lives (tasks of a current-thread runtime log on its thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || logs.clone()).finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalid_newest_commit_is_an_error_everywhere_and_is_warned_about_once() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    let good = yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let good = good.commit.expect("a commit").sha;
    yard.write("apps/web.yaml", "kind: App\nname: web\nimage: web:2\nreplicas: many\n");
    let bad = yard.push("web: a typo");
    let invalid = yard
        .until("the invalid commit", |env| env.invalid_commit.as_ref().is_some_and(|commit| commit.sha == bad))
        .await;
    assert_eq!(invalid.sync_status, SyncStatus::Error);
    // Polls and drift checks find the same commit again.
    for _ in 0..3 {
        yard.daemon.pushed_here("main");
        yard.idle(Duration::from_secs(5)).await;
    }
    assert_eq!(yard.env().sync_status, SyncStatus::Error, "still the invalid commit");
    assert_eq!(yard.running_image().as_deref(), Some("web:1"), "the last good state keeps running");

    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("badge error"), "{page}");
    assert!(!page.contains("what runs matches git"), "git's newest commit is not what runs: {page}");
    let said = format!(
        "Nothing to change against the last good commit <code>{}</code>; the newest commit <code>{}</code> is invalid",
        short_sha(&good),
        short_sha(&bad)
    );
    assert!(page.contains(&said), "{page}");
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(metrics.contains("railyard_sync_status{env=\"production\",status=\"error\"} 1"), "{metrics}");

    let warned = logs.text().lines().filter(|line| line.contains("WARN") && line.contains("is invalid")).count();
    assert_eq!(warned, 1, "once per commit, not on every poll:\n{}", logs.text());
    let invalid_records = yard.outcomes_of(&bad).into_iter().filter(|o| *o == SyncOutcome::Invalid).count();
    assert_eq!(invalid_records, 1, "recorded once too");
}
