//! App logs for the server and the CLI: the daemon finds the environment, its backend and what hides the secrets of
//! what may run there: every value railyard resolved for the environment's apps and Jobs at the last reconcile (and
//! those of the one before, while an update has not gone through), redacted with [`ResolvedEnv::redact`], the same
//! redaction as Job output. It reads the backend's log stream, redacts every line before anything else sees it (the
//! text filter too, so that a filter cannot probe for a secret), and bounds what one request costs: a snapshot holds
//! at most `tail` lines of each replica and [`SNAPSHOT_BYTES`] (kept so while it is read); a follow stream sends
//! such a snapshot whole first, then new lines through a channel of [`FOLLOW_BUFFER`] lines, and a reader that falls
//! behind gets a "skipped N lines" entry instead of an ever-growing buffer; at most [`MAX_LOG_READS`] reads and follows run at once. Every follow stream
//! ends when its reader goes away or the daemon stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Daemon;
use super::env::EnvHandle;
use super::gate::Reconciled;
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::{BackendError, LogLine, LogQuery};
use crate::pipeline::Prepared;
use crate::plan::ChangeKind;

/// Lines a request gets when it does not say.
pub const DEFAULT_TAIL: usize = 1_000;
/// Most lines one request may ask for.
pub const MAX_TAIL: usize = 10_000;
/// Most bytes of text one snapshot holds; the oldest lines go first.
pub const SNAPSHOT_BYTES: usize = 1 << 20;
/// Log reads and follow streams one daemon serves at once; more are refused until one ends.
pub const MAX_LOG_READS: usize = 64;
/// Lines a follow stream holds for a reader that is slower than the app prints.
pub const FOLLOW_BUFFER: usize = 256;

/// One entry of a log answer: a line, or word that lines were skipped or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    Line(LogLine),
    /// A slow reader missed this many lines of a follow stream.
    Skipped {
        skipped: u64,
    },
    /// Reading stopped or a replica's log could not be read.
    Error {
        error: String,
    },
    /// The stream ended by itself: no replica runs, or a deploy replaced those it read. A reader may come back later.
    Ended {
        ended: String,
    },
}

/// Since when lines are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    /// Since the app was last deployed (created or updated) by this railyard process, or since the environment's
    /// last sync when it was deployed before this process started.
    LastDeploy,
    /// Only lines after this time (nanoseconds since the epoch): a live tail going on from the last line it showed.
    After(i64),
}

impl Since {
    /// `5m`, `1h`, `30s` ..., `deploy`, or an RFC 3339 time (lines after it).
    pub fn parse(text: &str) -> Result<Since, String> {
        if text == "deploy" {
            return Ok(Since::LastDeploy);
        }
        if let Some(at) = chrono::DateTime::parse_from_rfc3339(text).ok().and_then(|at| at.timestamp_nanos_opt()) {
            return Ok(Since::After(at));
        }
        crate::model::units::parse_duration(text).map(Since::Ago).map_err(|error| {
            format!("`since={text}` is neither a duration (5m, 1h, 30s), `deploy` nor an RFC 3339 time: {error}")
        })
    }
}

/// What a log request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub replica: Option<u32>,
    pub since: Option<Since>,
    /// Lines of each replica (at most [`MAX_TAIL`]; 0 for a follow stream of new lines only); [`DEFAULT_TAIL`]
    /// when `None`.
    pub tail: Option<usize>,
    /// Only lines whose redacted text holds this (case-insensitive).
    pub filter: Option<String>,
}

impl LogRequest {
    fn tail(&self) -> usize {
        self.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL)
    }

    fn keeps(&self, line: &LogLine) -> bool {
        self.is_after_since(line) && self.matches_filter(line)
    }

    /// Whether `line` comes after an exact `since` time (durations and `deploy` are the backend's to apply).
    fn is_after_since(&self, line: &LogLine) -> bool {
        match self.since {
            Some(Since::After(after)) => line.at_ns().is_none_or(|at| at > after),
            _ => true,
        }
    }

    fn matches_filter(&self, line: &LogLine) -> bool {
        self.filter
            .as_deref()
            .filter(|filter| !filter.is_empty())
            .is_none_or(|filter| line.text.to_lowercase().contains(&filter.to_lowercase()))
    }
}

/// A snapshot of an app's log: its last lines, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSnapshot {
    pub lines: Vec<LogLine>,
    /// Older lines were left out to stay within the limits.
    pub truncated: bool,
    /// Replicas whose log could not be read, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The start of the window shown (milliseconds since the epoch), when a `since` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// The limits the snapshot was read under.
    pub max_lines: usize,
    pub max_bytes: usize,
}

/// Why the log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no environment `{0}`; the status page and GET /api/v1/environments list them")]
    UnknownEnvironment(String),
    #[error("environment `{env}` has no app `{app}`; {hint}")]
    UnknownApp { env: String, app: String, hint: String },
    #[error(
        "environment `{0}` has not synced since railyard started, so what hides its secrets is not known yet and no \
         log is shown; wait for its first sync (or sync it now)"
    )]
    NotReconciled(String),
    #[error(
        "railyard is already serving {MAX_LOG_READS} log reads and live tails; close a log page or a `railyard logs \
         -f` and try again"
    )]
    Busy,
    #[error("cannot read the log of app `{app}` in `{env}`: {source}")]
    Backend {
        env: String,
        app: String,
        #[source]
        source: BackendError,
    },
}

/// What the last reconcile that ran left for logs: the apps, what hides their secrets, and when each was deployed.
#[derive(Default)]
pub(super) struct LogsState {
    known: bool,
    /// The apps and redactors of the last reconcile that left its state running.
    running: (Vec<String>, Vec<ResolvedEnv>),
    /// Those of a later reconcile whose state does not run (yet): an update that failed, was rolled back or waits.
    tried: (Vec<String>, Vec<ResolvedEnv>),
    /// Both, as reads use them.
    apps: Vec<String>,
    redactors: Arc<Vec<ResolvedEnv>>,
    deployed_ms: BTreeMap<String, i64>,
}

impl EnvHandle {
    /// Takes what a reconcile prepared: when it now runs (applied, or nothing to change), its apps and what hides
    /// their secrets replace the last; otherwise (a failed or rolled back update, a plan waiting) they are shown
    /// beside them, since either may be what runs and prints now. Notes the deploy time of each app an apply
    /// created or updated: when the reconcile started (`started_ms`), so that what the app printed while it booted
    /// and the rollout waited for it is shown since its deploy.
    pub(super) fn keep_for_logs(&self, prepared: &Prepared, reconciled: &Reconciled, started_ms: i64) {
        let desired = &prepared.desired;
        let containers =
            desired.apps.values().map(|app| &app.container).chain(desired.jobs.values().map(|j| &j.container));
        let redactors: Vec<ResolvedEnv> =
            containers.map(|container| ResolvedEnv::redactor(container, &prepared.secrets)).collect();
        let kept = (desired.apps.keys().cloned().collect(), redactors);
        let mut logs = self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(reconciled, Reconciled::Applied | Reconciled::Unchanged) {
            logs.running = kept;
            logs.tried = Default::default();
        } else {
            logs.tried = kept;
        }
        let mut apps: Vec<String> = logs.running.0.iter().chain(&logs.tried.0).cloned().collect();
        apps.sort();
        apps.dedup();
        logs.deployed_ms.retain(|app, _| apps.contains(app));
        logs.apps = apps;
        logs.redactors = Arc::new(logs.running.1.iter().chain(&logs.tried.1).cloned().collect());
        logs.known = true;
        if *reconciled == Reconciled::Applied {
            for action in &prepared.plan.apps {
                if matches!(action.change.kind(), ChangeKind::Create | ChangeKind::Update) {
                    logs.deployed_ms.insert(action.name.clone(), started_ms);
                }
            }
        }
    }
}

/// Everything one read needs, found before the backend is asked.
struct Reading {
    backend: Arc<dyn crate::backend::Backend>,
    environment: crate::model::Environment,
    query: LogQuery,
    redactors: Arc<Vec<ResolvedEnv>>,
    since_ms: Option<i64>,
    /// Held while the read runs.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// `line` with every secret hidden, then cut to what is shown: a secret crossing the cut is hidden whole, and the
/// start of a secret at the end of a line whose rest was not read is hidden too.
fn redact(redactors: &[ResolvedEnv], mut line: LogLine) -> LogLine {
    line.text = redactors.iter().fold(line.text, |text, redactor| redactor.redact(&text));
    if line.read_cut {
        line.text = redactors.iter().fold(line.text, |text, redactor| redactor.redact_cut_end(text));
    }
    line.cut_to_shown()
}

impl Daemon {
    async fn reading(&self, env: &str, app: &str, request: &LogRequest, follow: bool) -> Result<Reading, LogsError> {
        let permit = Arc::clone(&self.log_reads).try_acquire_owned().map_err(|_| LogsError::Busy)?;
        let handle = self.env(env).ok_or_else(|| LogsError::UnknownEnvironment(env.to_owned()))?;
        let (redactors, deployed_ms) = {
            let logs = handle.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !logs.known {
                return Err(LogsError::NotReconciled(env.to_owned()));
            }
            if !logs.apps.iter().any(|known| known == app) {
                let hint = crate::model::suggest_name(app, logs.apps.iter());
                return Err(LogsError::UnknownApp { env: env.to_owned(), app: app.to_owned(), hint });
            }
            (Arc::clone(&logs.redactors), logs.deployed_ms.get(app).copied())
        };
        let since_ms = match request.since {
            None => None,
            Some(Since::Ago(ago)) => {
                Some(super::now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX / 2).min(super::now_ms()))
            }
            Some(Since::LastDeploy) => deployed_ms.or(handle.state().last_sync_ms),
            Some(Since::After(at)) => Some(at.div_euclid(1_000_000)),
        };
        let backend = self.backend_for(env).await.map_err(|source| LogsError::Backend {
            env: env.to_owned(),
            app: app.to_owned(),
            source,
        })?;
        let query = LogQuery {
            replica: request.replica,
            since_seconds: since_ms.map(|ms| ms.div_euclid(1000)),
            tail_lines: request.tail(),
            follow,
        };
        let environment = handle.environment(&handle.project());
        Ok(Reading { backend, environment, query, redactors, since_ms, _permit: permit })
    }

    /// The last lines of `app` in `env`, redacted, oldest first, within the request's and the daemon's limits.
    pub async fn app_logs(&self, env: &str, app: &str, request: &LogRequest) -> Result<LogSnapshot, LogsError> {
        let reading = self.reading(env, app, request, false).await?;
        let failed = |source| LogsError::Backend { env: env.to_owned(), app: app.to_owned(), source };
        let newest = read_newest(&reading, app, request).await.map_err(failed)?;
        Ok(LogSnapshot {
            lines: newest.lines,
            truncated: newest.truncated,
            errors: newest.errors,
            since_ms: reading.since_ms,
            max_lines: request.tail(),
            max_bytes: SNAPSHOT_BYTES,
        })
    }

    /// The last lines of `app` in `env`, then new ones as they come, redacted, through a channel of
    /// [`FOLLOW_BUFFER`] entries. The last lines are read first and all sent, oldest first across replicas, waiting
    /// for the reader; only new lines are dropped (and counted) for a reader that falls behind. Ends when the
    /// receiver is dropped, the backend's stream ends, or the daemon stops.
    pub async fn follow_app_logs(
        self: &Arc<Self>,
        env: &str,
        app: &str,
        request: &LogRequest,
    ) -> Result<mpsc::Receiver<LogEntry>, LogsError> {
        let reading = self.reading(env, app, request, true).await?;
        let failed = |source| LogsError::Backend { env: env.to_owned(), app: app.to_owned(), source };
        let (backlog, live_query) = if reading.query.tail_lines == 0 {
            (NewestRead::default(), reading.query.clone())
        } else {
            // From the second the backlog is read in (the platforms' `since` counts whole seconds), so that nothing
            // printed while it is read is lost; what the backlog already holds is left out of the live lines.
            let started = super::now_ms().div_euclid(1000);
            let backlog = read_newest(&reading, app, request).await.map_err(failed)?;
            let since_seconds = Some(reading.query.since_seconds.map_or(started, |since| since.max(started)));
            (backlog, LogQuery { since_seconds, tail_lines: MAX_TAIL, ..reading.query.clone() })
        };
        let stream = reading.backend.logs(&reading.environment, app, &live_query).await.map_err(failed)?;
        let (sender, receiver) = mpsc::channel(FOLLOW_BUFFER);
        let daemon = Arc::clone(self);
        let request = request.clone();
        // A reader that went away ends the read at once, even while the app prints nothing.
        let gone = sender.clone();
        let Reading { redactors, _permit: permit, .. } = reading;
        tokio::spawn(async move {
            let _held_while_following = permit;
            let follow = async {
                if send_backlog(&sender, backlog.errors, backlog.lines).await {
                    forward_until_ended(stream, sender, &redactors, &request, &backlog.last_ns).await;
                }
            };
            tokio::select! {
                () = follow => {}
                () = gone.closed() => {}
                () = daemon.stopped() => {}
            }
        });
        Ok(receiver)
    }
}

/// What one read of a log found: each replica's newest lines within the bounds, oldest first across replicas.
#[derive(Default)]
struct NewestRead {
    lines: Vec<LogLine>,
    truncated: bool,
    errors: Vec<String>,
    /// The time (nanoseconds) of the last line read of each replica, shown or not.
    last_ns: BTreeMap<u32, i64>,
}

/// Reads the last lines `reading` asks for, redacted and filtered, keeping only the newest while reading.
async fn read_newest(reading: &Reading, app: &str, request: &LogRequest) -> Result<NewestRead, BackendError> {
    // One line more than shown: a replica that has it had older lines left out.
    let query =
        LogQuery { tail_lines: reading.query.tail_lines.saturating_add(1), follow: false, ..reading.query.clone() };
    let mut stream = reading.backend.logs(&reading.environment, app, &query).await?;
    let tail = request.tail();
    let mut replicas: BTreeMap<u32, Newest> = BTreeMap::new();
    let mut read = NewestRead::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(line) => {
                if let Some(at) = line.at_ns() {
                    read.last_ns.insert(line.replica, at);
                }
                let line = redact(&reading.redactors, line);
                if request.keeps(&line) {
                    replicas.entry(line.replica).or_default().push(line, tail, SNAPSHOT_BYTES);
                }
            }
            Err(error) => read.errors.push(error.to_string()),
        }
    }
    let dropped = replicas.values().any(|newest| newest.dropped);
    let mut lines: Vec<LogLine> = replicas.into_values().flat_map(|newest| newest.lines).collect();
    // Each replica's lines come in order; sorting by time (stable) interleaves the replicas. By the parsed time:
    // RFC 3339 as Docker writes it drops trailing zeros of the fraction, so the text does not sort.
    lines.sort_by_cached_key(|line| line.at_ns().unwrap_or(i64::MIN));
    let (lines, truncated) = newest_within(lines, tail, SNAPSHOT_BYTES);
    read.lines = lines;
    read.truncated = truncated || dropped;
    Ok(read)
}

/// Sends the backlog of a follow stream, waiting for the reader; false when it went away.
async fn send_backlog(sender: &mpsc::Sender<LogEntry>, errors: Vec<String>, lines: Vec<LogLine>) -> bool {
    let entries =
        errors.into_iter().map(|error| LogEntry::Error { error }).chain(lines.into_iter().map(LogEntry::Line));
    for entry in entries {
        if sender.send(entry).await.is_err() {
            return false;
        }
    }
    true
}

/// The newest lines of one replica as they are read, at most so many lines and bytes.
#[derive(Default)]
struct Newest {
    lines: std::collections::VecDeque<LogLine>,
    bytes: usize,
    /// Older lines were left out.
    dropped: bool,
}

impl Newest {
    fn push(&mut self, line: LogLine, max_lines: usize, max_bytes: usize) {
        self.bytes += line.size();
        self.lines.push_back(line);
        while self.lines.len() > max_lines || self.bytes > max_bytes {
            let Some(oldest) = self.lines.pop_front() else { break };
            self.bytes -= oldest.size();
            self.dropped = true;
        }
    }
}

/// The newest of `lines` (oldest first) with at most `tail` of each replica and `max_bytes` in all, oldest first;
/// true when any was left out.
fn newest_within(mut lines: Vec<LogLine>, tail: usize, max_bytes: usize) -> (Vec<LogLine>, bool) {
    let mut per_replica: BTreeMap<u32, usize> = BTreeMap::new();
    let mut bytes = 0;
    let mut kept = Vec::new();
    let total = lines.len();
    while let Some(line) = lines.pop() {
        let count = per_replica.entry(line.replica).or_default();
        if *count >= tail {
            continue;
        }
        bytes += line.size();
        if bytes > max_bytes {
            break;
        }
        *count += 1;
        kept.push(line);
    }
    kept.reverse();
    let truncated = kept.len() < total;
    (kept, truncated)
}

/// [`forward`], then word that the stream ended by itself (the reader is still there).
async fn forward_until_ended(
    stream: crate::backend::LogStream,
    sender: mpsc::Sender<LogEntry>,
    redactors: &[ResolvedEnv],
    request: &LogRequest,
    backlog_ns: &BTreeMap<u32, i64>,
) {
    let ended = sender.clone();
    forward(stream, sender, redactors, request, backlog_ns).await;
    let word = "the log ended: no replica runs, or a deploy replaced those it read";
    // Waits for room: this is the stream's last entry.
    let _ = ended.send(LogEntry::Ended { ended: word.to_owned() }).await;
}

/// Sends the redacted, filtered lines of `stream` newer than the backlog's of their replica (`backlog_ns`) to
/// `sender`; a line that finds the channel full is counted and
/// dropped, and the count is sent as a [`LogEntry::Skipped`] once there is room again.
async fn forward(
    mut stream: crate::backend::LogStream,
    sender: mpsc::Sender<LogEntry>,
    redactors: &[ResolvedEnv],
    request: &LogRequest,
    backlog_ns: &BTreeMap<u32, i64>,
) {
    let mut skipped = 0u64;
    while let Some(item) = stream.next().await {
        let entry = match item {
            Ok(line) => {
                let in_backlog =
                    backlog_ns.get(&line.replica).is_some_and(|last| line.at_ns().is_some_and(|at| at <= *last));
                if in_backlog {
                    continue;
                }
                let line = redact(redactors, line);
                if !request.keeps(&line) {
                    continue;
                }
                LogEntry::Line(line)
            }
            Err(error) => LogEntry::Error { error: error.to_string() },
        };
        if skipped > 0 {
            match sender.try_send(LogEntry::Skipped { skipped }) {
                Ok(()) => skipped = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    skipped += 1;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        match sender.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => skipped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LogSource;

    fn line(text: &str) -> LogLine {
        LogLine {
            replica: 1,
            stream: LogSource::Stdout,
            timestamp: String::new(),
            text: text.to_owned(),
            read_cut: false,
        }
    }

    fn redactors_of(secret: &str) -> [ResolvedEnv; 1] {
        let mut app = crate::model::AppSpec::bare("web");
        app.container.env =
            [("DB".to_owned(), crate::model::desired::EnvSpec::Secret { secret: "db".into(), digest: None })].into();
        let secrets = crate::secrets::ResolvedSecrets::from_values([("db".to_owned(), secret.to_owned())].into());
        [ResolvedEnv::redactor(&app.container, &secrets)]
    }

    /// What the daemon shows of `raw` printed by an app, read as a backend reads it.
    fn shown(redactors: &[ResolvedEnv], raw: &[u8]) -> Vec<String> {
        let mut splitter = crate::backend::logs::LineSplitter::default();
        let read = splitter.push(raw).into_iter().chain(splitter.finish());
        read.map(|read| redact(redactors, LogLine::from_read(1, LogSource::Stdout, read)).text).collect()
    }

    #[test]
    fn a_secret_crossing_the_cut_of_a_long_line_is_hidden_whole() {
        use crate::backend::logs::{MAX_LINE_BYTES, MAX_READ_LINE_BYTES};
        // Long, so that the line hiding it many times becomes shorter than what is shown.
        let secret = format!("hunter22-{}", "s".repeat(91));
        let secret = secret.as_str();
        let redactors = redactors_of(secret);
        // Across the cut to what is shown.
        let across_shown = format!("{}{secret} and more\n", "x".repeat(MAX_LINE_BYTES - 6));
        let texts = shown(&redactors, across_shown.as_bytes());
        assert!(
            texts[0].ends_with("xx<redac…") && !texts[0].contains("hunter"),
            "{}",
            &texts[0][MAX_LINE_BYTES - 20..]
        );
        // Across the end of what is read of an endless line, after other secrets made the line short.
        let mut endless = format!("{secret} ").repeat(MAX_READ_LINE_BYTES / (secret.len() + 1));
        endless.truncate(MAX_READ_LINE_BYTES - 6);
        endless.push_str(&format!("{secret}{}\nnext\n", "y".repeat(MAX_READ_LINE_BYTES)));
        let texts = shown(&redactors, endless.as_bytes());
        assert_eq!(texts.len(), 2, "the rest of the endless line is dropped");
        assert!(!texts[0].contains("hunt") && texts[0].ends_with('…'), "{}", &texts[0][texts[0].len() - 40..]);
        assert_eq!(texts[1], "next");
    }

    #[test]
    fn since_reads_durations_and_deploy() {
        assert_eq!(Since::parse("5m"), Ok(Since::Ago(Duration::from_secs(300))));
        assert_eq!(Since::parse("deploy"), Ok(Since::LastDeploy));
        assert!(Since::parse("yesterday").is_err_and(|error| error.contains("deploy")));
    }

    #[test]
    fn a_snapshot_keeps_the_newest_lines_of_each_replica_within_its_bytes() {
        let numbered = |replica, n: usize| LogLine { replica, ..line(&format!("{replica}:{n}")) };
        let lines: Vec<LogLine> = (0..6).map(|n| numbered(if n % 2 == 0 { 1 } else { 2 }, n)).collect();
        let (kept, truncated) = newest_within(lines.clone(), 2, usize::MAX);
        let texts: Vec<&str> = kept.iter().map(|line| line.text.as_str()).collect();
        assert_eq!((texts, truncated), (vec!["1:2", "2:3", "1:4", "2:5"], true));
        let (all, truncated) = newest_within(lines.clone(), 3, usize::MAX);
        assert_eq!((all.len(), truncated), (6, false));
        let (within, truncated) = newest_within(lines, 3, 2 * (3 + 16));
        assert_eq!((within.len(), truncated), (2, true));
    }

    #[tokio::test]
    async fn a_stream_that_ends_by_itself_says_so_and_a_tail_goes_on_after_a_time() {
        let (sender, mut receiver) = mpsc::channel(FOLLOW_BUFFER);
        let stamped = |at: &str, text: &str| LogLine { timestamp: at.to_owned(), ..line(text) };
        let lines = vec![
            Ok(stamped("2026-12-05T10:00:00.000000001Z", "shown before")),
            Ok(stamped("2026-12-05T10:00:00.000000002Z", "printed since")),
        ];
        let since = Since::parse("2026-12-05T10:00:00.000000001Z").expect("a time");
        let request = LogRequest { since: Some(since), ..LogRequest::default() };
        forward_until_ended(futures_util::stream::iter(lines).boxed(), sender, &[], &request, &BTreeMap::new()).await;
        assert_eq!(
            receiver.recv().await,
            Some(LogEntry::Line(stamped("2026-12-05T10:00:00.000000002Z", "printed since")))
        );
        assert!(matches!(receiver.recv().await, Some(LogEntry::Ended { .. })));
        assert_eq!(receiver.recv().await, None);
    }

    #[test]
    fn a_replicas_newest_lines_are_bounded_while_they_are_read() {
        let mut newest = Newest::default();
        for n in 0..10_000 {
            newest.push(line(&format!("{n:>100}")), 50, 10 * (100 + 16));
            assert!(newest.lines.len() <= 10 && newest.bytes <= 10 * (100 + 16));
        }
        assert!(newest.dropped);
        assert_eq!(newest.lines.back().map(|line| line.text.trim()), Some("9999"));
        let mut few = Newest::default();
        few.push(line("one"), 2, usize::MAX);
        few.push(line("two"), 2, usize::MAX);
        assert!(!few.dropped);
        few.push(line("three"), 2, usize::MAX);
        assert_eq!((few.lines.len(), few.dropped), (2, true));
    }

    #[tokio::test]
    async fn a_slow_reader_gets_a_count_of_what_it_missed_not_an_endless_buffer() {
        let lines: Vec<Result<LogLine, BackendError>> = (0..1_000).map(|n| Ok(line(&format!("line {n}")))).collect();
        let (sender, mut receiver) = mpsc::channel(FOLLOW_BUFFER);
        forward(futures_util::stream::iter(lines).boxed(), sender, &[], &LogRequest::default(), &BTreeMap::new()).await;
        let mut received = Vec::new();
        while let Some(entry) = receiver.recv().await {
            received.push(entry);
        }
        assert_eq!(received.len(), FOLLOW_BUFFER, "never more than the buffer holds");
        assert_eq!(received[0], LogEntry::Line(line("line 0")));
    }

    #[tokio::test]
    async fn the_filter_sees_only_redacted_text() {
        let spec = {
            let mut app = crate::model::AppSpec::bare("web");
            app.container.env =
                [("DB".to_owned(), crate::model::desired::EnvSpec::Secret { secret: "db".into(), digest: None })]
                    .into();
            app
        };
        let secrets = crate::secrets::ResolvedSecrets::from_values([("db".to_owned(), "hunter22".to_owned())].into());
        let redactors = [ResolvedEnv::redactor(&spec.container, &secrets)];
        let request = LogRequest { filter: Some("hunter".into()), ..LogRequest::default() };
        let (sender, mut receiver) = mpsc::channel(FOLLOW_BUFFER);
        let lines = vec![Ok(line("password hunter22")), Ok(line("hunter season"))];
        forward(futures_util::stream::iter(lines).boxed(), sender, &redactors, &request, &BTreeMap::new()).await;
        assert_eq!(receiver.recv().await, Some(LogEntry::Line(line("hunter season"))));
        assert_eq!(receiver.recv().await, None, "the line with the secret does not match its value");
    }
}
