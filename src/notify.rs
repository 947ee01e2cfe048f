//! Notifications: sync succeeded, failed or rolled back, preview up or torn down, posted to the targets of the daemon
//! settings file (never from git) as a generic JSON webhook or a Slack-compatible incoming webhook. Sending never
//! blocks a reconcile: events are queued and a task delivers them, retrying with backoff. A target's URL is a
//! secret (Slack's carries the token): it is never logged, and Debug shows only its host.
//!
//! Messages quote git and logs (commit summaries, errors), which a pull request's author writes: the chat line is
//! escaped as Slack documents, so that `<!channel>` or `<http://evil|click>` in a commit message stays text. A
//! target that redirects to another origin is not followed (the body would go to whoever that is).

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
    /// The line a chat shows, escaped for Slack's text (`&`, `<`, `>`): every part of it may come from git.
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
        slack_escape(&format!("railyard: {} {what}{commit}: {}{urls}", self.env, self.message))
    }
}

/// `text` as Slack wants plain text: `&`, `<` and `>` as entities, so that nothing in it becomes a link, a mention
/// or a command (`<!channel>`, `<@U123>`, `<http://x|label>`). Mattermost and Discord's Slack endpoints read the same.
pub fn slack_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
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
        let http = http_client();
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

/// The client for targets: redirects are followed within the target's origin only.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(crate::outbound::same_origin_redirects())
        .build()
        .unwrap_or_default()
}

/// One POST of `body` to `target`; the error names neither the URL nor a redirect's path (they may hold a token).
async fn post(http: &reqwest::Client, target: &Target, body: &serde_json::Value) -> Result<(), String> {
    let response = http.post(&target.url).json(body).send().await.map_err(|error| error.without_url().to_string())?;
    if response.status().is_success() {
        Ok(())
    } else if response.status().is_redirection() {
        Err(format!(
            "answered {} towards {}, another origin, where the message is not sent; give the target's final URL in the settings file",
            response.status(),
            crate::outbound::redirect_origin(&response)
        ))
    } else {
        Err(format!("answered {}", response.status()))
    }
}

/// POSTs `event` to `target`, retrying with backoff; gives up with a warning that names the host only.
async fn deliver(http: &reqwest::Client, target: &Target, event: &Event) {
    let body = match target.kind {
        TargetKind::Json => json!(event),
        TargetKind::Slack => json!({ "text": event.text() }),
    };
    let sent = crate::outbound::with_backoff(ATTEMPTS, Duration::from_secs(1), || post(http, target, &body)).await;
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

    #[test]
    fn hostile_text_from_git_is_escaped_as_slack_documents() {
        let event = Event {
            kind: EventKind::SyncFailed,
            env: "pr-7".into(),
            commit: Some("0123456789abcdef0123".into()),
            message: "web: <!channel> look at <http://evil.example|the fix> & <@U024BE7LH> <!here|x>".into(),
            urls: vec!["http://web-pr-7.preview.test/?a=1&b=<2>".into()],
        };
        let text = event.text();
        assert_eq!(
            text,
            "railyard: pr-7 sync failed at 0123456789ab: web: &lt;!channel&gt; look at &lt;http://evil.example|the fix&gt; \
             &amp; &lt;@U024BE7LH&gt; &lt;!here|x&gt; (http://web-pr-7.preview.test/?a=1&amp;b=&lt;2&gt;)"
        );
        // Slack's control sequences all start with `<`: none is left.
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert_eq!(slack_escape("&amp;"), "&amp;amp;", "an entity in git stays the text it was");
    }

    /// A loopback HTTP server answering every request with `answer`; the requests it got (head and body).
    async fn listener(answer: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 65536];
                let read = stream.read(&mut request).await.unwrap_or(0);
                keep.lock().expect("lock").push(String::from_utf8_lossy(&request[..read]).into_owned());
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_and_the_error_names_only_the_origin() {
        let (elsewhere, seen_elsewhere) = listener("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/collect/secret-path-77\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (port, seen) = listener(redirect).await;
        let target =
            Target { kind: TargetKind::Slack, url: format!("http://127.0.0.1:{port}/services/T0/B0/token-canary") };
        let error = post(&http_client(), &target, &json!({ "text": "hello" })).await.expect_err("not followed");
        assert!(error.contains(&format!("towards http://127.0.0.1:{elsewhere}, another origin")), "{error}");
        assert!(!error.contains("secret-path-77") && !error.contains("token-canary"), "{error}");
        assert_eq!(seen.lock().expect("lock").len(), 1, "the target was asked");
        assert!(seen_elsewhere.lock().expect("lock").is_empty(), "the message never reaches the other origin");
    }
}
