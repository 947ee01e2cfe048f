//! What an app's replicas printed, as every backend reads it: the query (which replica, since when, how many lines,
//! whether to follow), and the stream of lines it answers with. Docker tells stdout from stderr; Kubernetes' pod log
//! API does not, so its lines say `output`. Redaction and bounds are the daemon's ([`crate::daemon::logs`]).

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::BackendError;

/// Longest line kept: a longer one is cut there (with `…`), so that one endless line cannot fill memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Which of a replica's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogSource {
    Stdout,
    Stderr,
    /// The platform does not tell them apart (Kubernetes' pod log API).
    Output,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Output => "output",
        }
    }
}

/// One line a replica printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// The replica's number: Compose's container number on Docker, the pod's place among the app's pods sorted by
    /// name on Kubernetes.
    pub replica: u32,
    pub stream: LogSource,
    /// When the platform received it, RFC 3339 as the platform wrote it (UTC, up to nanoseconds); empty if unknown.
    pub timestamp: String,
    pub text: String,
}

impl LogLine {
    /// A line from the platform's `timestamp text` form (both Docker and Kubernetes write that with timestamps on).
    pub fn parse(replica: u32, stream: LogSource, raw: &str) -> LogLine {
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (timestamp, text) = match raw.split_once(' ') {
            Some((stamp, text)) if looks_like_timestamp(stamp) => (stamp, text),
            _ => ("", raw),
        };
        LogLine { replica, stream, timestamp: timestamp.to_owned(), text: cut(text) }
    }

    /// The line's time in milliseconds since the epoch, when it has one.
    pub fn at_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp).ok().map(|at| at.timestamp_millis())
    }

    /// Bytes this line counts for in a response's byte budget.
    pub fn size(&self) -> usize {
        self.text.len() + self.timestamp.len() + 16
    }
}

fn looks_like_timestamp(stamp: &str) -> bool {
    stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T')
}

/// `text`, cut at [`MAX_LINE_BYTES`] on a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_LINE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What to read of an app's replicas' output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// One replica (by number), or all of them.
    pub replica: Option<u32>,
    /// Only lines since this time (seconds since the epoch).
    pub since_seconds: Option<i64>,
    /// At most this many of the last lines of each replica before following.
    pub tail_lines: usize,
    /// Go on with new lines until the reader stops reading.
    pub follow: bool,
}

/// The lines a backend reads; each replica's in order, replicas interleaved as they come.
pub type LogStream = BoxStream<'static, Result<LogLine, BackendError>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamped_line_is_split_and_a_bare_one_kept_whole() {
        let line = LogLine::parse(2, LogSource::Stderr, "2026-12-05T11:31:48.123456789Z boom: it broke\n");
        assert_eq!(line.timestamp, "2026-12-05T11:31:48.123456789Z");
        assert_eq!(line.text, "boom: it broke");
        assert_eq!(line.at_ms(), Some(1_796_470_308_123));
        let bare = LogLine::parse(1, LogSource::Output, "no time here");
        assert_eq!((bare.timestamp.as_str(), bare.text.as_str()), ("", "no time here"));
    }

    #[test]
    fn an_endless_line_is_cut() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let line = LogLine::parse(1, LogSource::Stdout, &long);
        assert!(line.text.len() <= MAX_LINE_BYTES + '…'.len_utf8() && line.text.ends_with('…'));
    }
}
