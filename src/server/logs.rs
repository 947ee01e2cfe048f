//! App logs over HTTP: `GET /api/v1/environments/{env}/apps/{app}/logs` answers a JSON snapshot, or with
//! `follow=true` a stream (NDJSON, or Server-Sent Events when asked with `Accept: text/event-stream` or
//! `format=sse`) that ends when railyard stops; and the log section of an app's page, which shows the snapshot
//! without JavaScript and tails it live through `EventSource` with it. The daemon reads, redacts and bounds; this
//! module only shapes the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::json;

use super::ServerState;
use crate::backend::LogLine;
use crate::daemon::Daemon;
use crate::daemon::logs::{LogEntry, LogRequest, LogSnapshot, LogsError, Since};

/// The query of the logs API and of the app page's log section.
#[derive(Debug, Default, Deserialize)]
pub struct LogParams {
    /// `5m`, `1h`, ... or `deploy`; empty for the last lines whenever they were printed.
    #[serde(default)]
    pub since: Option<String>,
    /// A replica's number; empty for all.
    #[serde(default)]
    pub replica: Option<String>,
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: Option<bool>,
    #[serde(default)]
    pub filter: Option<String>,
    /// `sse` or `ndjson` for a follow stream; otherwise the `Accept` header decides.
    #[serde(default)]
    pub format: Option<String>,
}

impl LogParams {
    fn request(&self) -> Result<LogRequest, String> {
        let since = match self.since.as_deref().filter(|since| !since.is_empty()) {
            None => None,
            Some(text) => Some(Since::parse(text)?),
        };
        let replica = match self.replica.as_deref().filter(|replica| !replica.is_empty()) {
            None => None,
            Some(text) => {
                Some(text.parse().map_err(|_| format!("`replica={text}` is not a replica number (1, 2, ...)"))?)
            }
        };
        let filter = self.filter.clone().filter(|filter| !filter.is_empty());
        Ok(LogRequest { replica, since, tail: self.tail, filter })
    }
}

fn refused(error: &LogsError) -> Response {
    let status = match error {
        LogsError::UnknownEnvironment(_) | LogsError::UnknownApp { .. } => StatusCode::NOT_FOUND,
        LogsError::NotReconciled(_) => StatusCode::CONFLICT,
        LogsError::Backend { .. } => StatusCode::BAD_GATEWAY,
        LogsError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// `GET /api/v1/environments/{env}/apps/{app}/logs`.
pub(super) async fn logs_api(
    State(state): State<Arc<ServerState>>,
    Path((env, app)): Path<(String, String)>,
    Query(params): Query<LogParams>,
    headers: HeaderMap,
) -> Response {
    let request = match params.request() {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if params.follow != Some(true) {
        return match state.daemon.app_logs(&env, &app, &request).await {
            Ok(snapshot) => Json(snapshot).into_response(),
            Err(error) => refused(&error),
        };
    }
    let receiver = match state.daemon.follow_app_logs(&env, &app, &request).await {
        Ok(receiver) => receiver,
        Err(error) => return refused(&error),
    };
    let entries = tokio_stream_of(receiver, Arc::clone(&state.daemon));
    let wants_sse = params.format.as_deref() == Some("sse")
        || (params.format.is_none()
            && headers
                .get(header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains("text/event-stream")));
    if wants_sse {
        use axum::response::sse::{Event, KeepAlive, Sse};
        let events = entries.map(|entry| Ok::<_, std::convert::Infallible>(Event::default().data(entry_json(&entry))));
        return Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    }
    let lines = entries.map(|entry| Ok::<_, std::convert::Infallible>(Bytes::from(entry_json(&entry) + "\n")));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

fn entry_json(entry: &LogEntry) -> String {
    serde_json::to_string(entry).unwrap_or_default()
}

/// The receiver's entries until it ends or the daemon stops.
fn tokio_stream_of(
    receiver: tokio::sync::mpsc::Receiver<LogEntry>,
    daemon: Arc<Daemon>,
) -> impl futures_util::Stream<Item = LogEntry> {
    let entries = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|entry| (entry, receiver))
    });
    let stopped = Box::pin(async move { daemon.stopped().await });
    entries.take_until(stopped)
}

/// The log section of app `app`'s page: the form (replica, since, filter), the snapshot (read only when `read`:
/// a live redraw keeps the one it shows), and the live tail.
pub(super) async fn section(
    state: &ServerState,
    env: &str,
    app: &crate::daemon::AppStatus,
    params: &LogParams,
    read: bool,
) -> Markup {
    let shown = match params.request() {
        Ok(_) if !read => None,
        Ok(request) => Some(state.daemon.app_logs(env, &app.name, &request).await.map_err(|error| error.to_string())),
        Err(message) => Some(Err(message)),
    };
    let mut replicas: Vec<u32> = app.replicas.iter().map(|replica| replica.number).collect();
    replicas.sort_unstable();
    replicas.dedup();
    let chosen_replica = params.replica.clone().unwrap_or_default();
    let chosen_since = params.since.clone().unwrap_or_default();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("follow", "true")
        .append_pair("format", "sse")
        .append_pair("replica", &chosen_replica)
        .append_pair("filter", params.filter.as_deref().unwrap_or_default())
        .finish();
    let stream_url = format!("/api/v1/environments/{env}/apps/{}/logs?{query}", app.name);
    html! {
        h2 { "Logs" }
        form.sync.logs method="get" id="log-form" {
            label { "Replica " select name="replica" {
                option value="" selected[chosen_replica.is_empty()] { "all" }
                @for number in &replicas {
                    option value=(number) selected[chosen_replica == number.to_string()] { (number) }
                }
            } }
            label { "Since " select name="since" {
                @for (value, text) in [("", "last lines"), ("5m", "5 min"), ("1h", "1 hour"), ("deploy", "last deploy")] {
                    option value=(value) selected[chosen_since == value] { (text) }
                }
            } }
            input type="search" name="filter" placeholder="filter" value=(params.filter.clone().unwrap_or_default());
            button type="submit" { "Show" }
        }
        div.card id="logs" data-stream=(stream_url) {
            @match &shown {
                Some(Ok(snapshot)) => (snapshot_view(snapshot)),
                Some(Err(error)) => p.error id="logs-error" { (error) },
                None => {},
            }
        }
        style { (PreEscaped(STYLE)) }
        script { (PreEscaped(FILTER)) }
        script { (PreEscaped(TAIL)) }
    }
}

fn snapshot_view(snapshot: &LogSnapshot) -> Markup {
    html! {
        @if snapshot.lines.is_empty() { p.muted id="logs-empty" { "No output in this window." } }
        (lines_view(&snapshot.lines))
        @for error in &snapshot.errors { p.error { (error) } }
        p.muted {
            (snapshot.lines.len()) " lines"
            @if snapshot.truncated { ", older lines left out (at most " (snapshot.max_lines) " lines and " (snapshot.max_bytes / 1024) " KiB)" }
            " · newest last · " span id="logs-live" { "reload for newer lines" }
        }
    }
}

/// Lines as the log view shows them, `replica | time text`, each marked with its stream (stderr in red); the Job
/// run page shows a run's output with it too (replica 0: no replica column).
pub fn lines_view(lines: &[LogLine]) -> Markup {
    html! {
        pre.mono.output.log id="log-lines" {
            @for line in lines {
                span class={ "line " (line.stream.as_str()) } data-replica=(line.replica) data-ts=(line.timestamp) {
                    @if line.replica > 0 { span.replica { (line.replica) " | " } }
                    @if !line.timestamp.is_empty() { span.ts { (short_time(&line.timestamp)) " " } }
                    (line.text) "\n"
                }
            }
        }
    }
}

/// `11:31:48.123` of an RFC 3339 time (the full time is in the API).
fn short_time(timestamp: &str) -> &str {
    let time = timestamp.split_once('T').map_or(timestamp, |(_, time)| time);
    time.get(..12).unwrap_or(time).trim_end_matches('Z')
}

/// The filter box hides the lines that do not hold its text as it is typed into (a snapshot's, a run's output, and
/// lines the live tail adds).
const FILTER: &str = r##"
(() => {
  if (window.railyardLogShow) return;
  // Found anew each time: a live redraw of the page replaces the form.
  const filter = () => document.querySelector("#log-form input[name=filter]");
  window.railyardLogShow = (span) => {
    const text = (filter() || { value: "" }).value.toLowerCase();
    span.hidden = !!text && !span.textContent.toLowerCase().includes(text);
  };
  document.addEventListener("input", (event) => {
    if (event.target.matches && event.target.matches("#log-form input[name=filter]"))
      document.querySelectorAll("#log-lines span.line").forEach(window.railyardLogShow);
  });
})();
"##;

/// The live tail: new lines from the follow stream are appended (at most 5,000 kept on the page), read from just
/// after the last line shown; after a deploy it reconnects from the last line it showed and goes on with the new
/// replicas, and while no replica runs it tries again less and less often. A function, so that a live redraw
/// that draws the log view anew (it showed an error) starts it too.
const TAIL: &str = r##"
window.railyardTail = window.railyardTail || (() => {
  const box = document.getElementById("logs"), pre = document.getElementById("log-lines");
  if (!box || !pre || !window.EventSource || box.dataset.tailing) return;
  box.dataset.tailing = "1";
  const live = document.getElementById("logs-live");
  pre.scrollTop = pre.scrollHeight;
  const part = (cls, text) => { const span = document.createElement("span"); span.className = cls; span.textContent = text; return span; };
  const add = (cls, replica, time, text) => {
    // Newest last: the view stays at the bottom unless it was scrolled up to read.
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    const span = part("line " + cls, ""); span.dataset.replica = replica;
    if (replica) span.append(part("replica", replica + " | "));
    if (time) span.append(part("ts", time + " "));
    span.append(text + "\n");
    if (window.railyardLogShow) window.railyardLogShow(span); pre.appendChild(span);
    while (pre.childElementCount > 5000) pre.firstElementChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  // Goes on from the last line shown (so nothing printed in between is lost), or from now when none has a time.
  const stamped = [...pre.querySelectorAll("span.line[data-ts]")].filter(span => span.dataset.ts);
  let last = stamped.length ? stamped[stamped.length - 1].dataset.ts : "";
  // The stream ends when the replicas it reads are replaced (a deploy) or none runs: the tail comes back after a
  // while, later each time the log ended with nothing new; a refusal (the app is gone) ends it for good.
  let delay = 3000;
  const connect = () => {
    const from = last ? "&since=" + encodeURIComponent(last) + "&tail=1000" : "&tail=0";
    const events = new EventSource(box.dataset.stream + from);
    live.textContent = "connecting…";
    events.onopen = () => { live.textContent = "live"; };
    events.onmessage = (message) => {
      const entry = JSON.parse(message.data);
      if (entry.text !== undefined) {
        add(entry.stream, entry.replica, (entry.timestamp || "").slice(11, 23), entry.text);
        if (entry.timestamp) last = entry.timestamp;
        delay = 3000;
      } else if (entry.skipped) add("skipped", "", "", "… " + entry.skipped + " lines skipped (the page read too slowly)");
      else if (entry.error) add("stderr", "", "", entry.error);
      else if (entry.ended) { events.close(); live.textContent = "no replica prints; trying again"; setTimeout(connect, delay); delay = Math.min(delay * 2, 60000); }
    };
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) { live.textContent = "live tail ended"; return; }
      // Reconnect from the last line shown rather than the browser's own retry with the first address.
      events.close(); live.textContent = "reconnecting…"; setTimeout(connect, delay);
    };
  };
  connect();
});
window.railyardTail();
"##;

const STYLE: &str =
    ".log .stderr{color:var(--bad)}.log .replica,.log .ts{color:var(--muted)}.log .skipped{color:var(--warn)}";

/// A Job run's output in the log view: its lines, and the filter (on the server with `?filter=`, and as typed).
pub fn output_view(output: &str, filter: Option<&str>) -> Markup {
    let filter = filter.unwrap_or_default();
    let lines: Vec<LogLine> = output
        .lines()
        .filter(|line| filter.is_empty() || line.to_lowercase().contains(&filter.to_lowercase()))
        .map(|line| LogLine {
            replica: 0,
            stream: crate::backend::LogSource::Output,
            timestamp: String::new(),
            text: line.to_owned(),
            read_cut: false,
        })
        .collect();
    html! {
        form.sync.logs method="get" id="log-form" {
            input type="search" name="filter" placeholder="filter" value=(filter);
            button type="submit" { "Filter" }
        }
        div.card id="output" { (lines_view(&lines)) }
        style { (PreEscaped(STYLE)) }
        script { (PreEscaped(FILTER)) }
    }
}
