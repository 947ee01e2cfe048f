//! Notifications: sync succeeded, failed or rolled back, preview up or torn down, posted to the targets of the daemon
//! settings file (never from git) as a generic JSON webhook or a Slack-compatible incoming webhook. Sending never
//! blocks a reconcile: events are queued and a task delivers them, retrying with backoff. A target's URL is a
//! secret (Slack's carries the token): it is never logged, and Debug shows only its host.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

/// Events queued beyond this are dropped (and logged): a dead target must not grow memory without bound.
const QUEUE: usize = 1000;
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

/// How a target wants its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The event as a JSON object.
    Json,
    /// `{"text": "..."}`, as Slack's (and Mattermost's, Discord's `/slack`) incoming webhooks take it.
    Slack,
}

/// One notification target of the settings file.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub kind: TargetKind,
    /// Where to POST; a secret (Slack's URL carries its token).
    pub url: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.url.split("://").nth(1).and_then(|rest| rest.split(['/', '?']).next()).unwrap_or("?");
        f.debug_struct("Target").field("kind", &self.kind).field("host", &host).finish_non_exhaustive()
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    SyncSucceeded,
    SyncFailed,
    RolledBack,
    PreviewUp,
    PreviewTornDown,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: EventKind,
    pub env: String,
    pub commit: Option<String>,
    /// One line: the plan's summary or the error.
    pub message: String,
    pub urls: Vec<String>,
}

impl Event {
    /// The line a chat shows.
    pub fn text(&self) -> String {
        let what = match self.kind {
            EventKind::SyncSucceeded => "synced",
            EventKind::SyncFailed => "sync failed",
            EventKind::RolledBack => "rolled back",
            EventKind::PreviewUp => "preview up",
            EventKind::PreviewTornDown => "preview torn down",
        };
        let commit =
            self.commit.as_deref().map(|sha| format!(" at {}", crate::model::short_sha(sha))).unwrap_or_default();
        let urls = if self.urls.is_empty() { String::new() } else { format!(" ({})", self.urls.join(", ")) };
        format!("railyard: {} {what}{commit}: {}{urls}", self.env, self.message)
    }
}

/// Queues events for the targets; cheap to call from a reconcile.
pub struct Notifier {
    queue: Option<mpsc::Sender<Event>>,
    /// The last event sent per environment, so that a failing environment retrying every few seconds notifies once.
    last: Mutex<BTreeMap<String, (EventKind, String)>>,
}

impl Notifier {
    /// A notifier delivering to `targets` (none: a notifier that drops everything). Call inside a Tokio runtime.
    pub fn start(targets: Vec<Target>) -> Notifier {
        if targets.is_empty() {
            return Notifier { queue: None, last: Mutex::default() };
        }
        let (queue, mut events) = mpsc::channel::<Event>(QUEUE);
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_default();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                for target in &targets {
                    deliver(&http, target, &event).await;
                }
            }
        });
        Notifier { queue: Some(queue), last: Mutex::default() }
    }

    /// Queues `event` unless it repeats the environment's last one.
    pub fn send(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        let key = (event.kind, event.message.clone());
        {
            let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.get(&event.env) == Some(&key) {
                return;
            }
            last.insert(event.env.clone(), key);
        }
        if queue.try_send(event).is_err() {
            warn!("the notification queue is full; an event was dropped");
        }
    }
}

/// POSTs `event` to `target`, retrying with backoff; gives up with a warning that names the host only.
async fn deliver(http: &reqwest::Client, target: &Target, event: &Event) {
    let body = match target.kind {
        TargetKind::Json => json!(event),
        TargetKind::Slack => json!({ "text": event.text() }),
    };
    let sent = crate::forge::with_backoff(ATTEMPTS, Duration::from_secs(1), || async {
        let response =
            http.post(&target.url).json(&body).send().await.map_err(|error| error.without_url().to_string())?;
        if response.status().is_success() { Ok(()) } else { Err(format!("answered {}", response.status())) }
    })
    .await;
    if let Err(error) = sent {
        warn!(target = ?target, %error, "cannot deliver a notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_shows_its_host_only() {
        let target =
            Target { kind: TargetKind::Slack, url: "https://hooks.slack.com/services/T0/B0/secret-token".into() };
        let shown = format!("{target:?}");
        assert!(shown.contains("hooks.slack.com") && !shown.contains("secret-token"), "{shown}");
    }

    #[test]
    fn the_chat_line_names_the_environment_the_commit_and_the_urls() {
        let event = Event {
            kind: EventKind::PreviewUp,
            env: "pr-7".into(),
            commit: Some("0123456789abcdef0123".into()),
            message: "1 to update".into(),
            urls: vec!["http://web-pr-7.preview.test".into()],
        };
        assert_eq!(
            event.text(),
            "railyard: pr-7 preview up at 0123456789ab: 1 to update (http://web-pr-7.preview.test)"
        );
    }
}
