//! What an app's replicas printed, as every backend reads it: the query (which replica, since when, how many lines,
//! whether to follow), and the stream of lines it answers with. Docker tells stdout from stderr; Kubernetes' pod log
//! API does not, so its lines say `output`. Both send bytes that [`LineSplitter`] cuts into bounded lines.
//! Redaction, and cutting a line to what is shown, are the daemon's ([`crate::daemon::logs`]): a line is redacted
//! whole, then cut, so that a secret crossing the cut cannot show its first part.

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::BackendError;

/// Longest line shown: a longer one is cut there (with `…`) once it is redacted.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Longest line a backend reads: the line shown and room for a secret (or its base64 form) crossing that cut, so
/// that redaction sees it whole. A longer line is cut here and the rest dropped up to its end, so that one endless
/// line cannot fill memory.
pub const MAX_READ_LINE_BYTES: usize = 4 * MAX_LINE_BYTES;

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
    /// The platform's line was longer than [`MAX_READ_LINE_BYTES`]: `text` is its start, and may end with the
    /// start of a secret.
    #[serde(skip)]
    pub read_cut: bool,
}

impl LogLine {
    /// A line from the platform's `timestamp text` form (both Docker and Kubernetes write that with timestamps on),
    /// whole: it is cut to [`MAX_LINE_BYTES`] once redacted ([`LogLine::cut_to_shown`]).
    pub fn parse(replica: u32, stream: LogSource, raw: &str) -> LogLine {
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (timestamp, text) = split_timestamp(raw);
        LogLine { replica, stream, timestamp: timestamp.to_owned(), text: text.to_owned(), read_cut: false }
    }

    /// A line [`LineSplitter`] read.
    pub fn from_read(replica: u32, stream: LogSource, read: ReadLine) -> LogLine {
        LogLine { read_cut: read.cut, ..LogLine::parse(replica, stream, &read.text) }
    }

    /// The line as shown: its text cut at [`MAX_LINE_BYTES`] on a character boundary, with `…` when it was cut
    /// here or when it was read. Only for a redacted line.
    pub fn cut_to_shown(mut self) -> LogLine {
        if self.text.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
            self.text.truncate(end);
            self.read_cut = true;
        }
        if std::mem::take(&mut self.read_cut) {
            self.text.push('…');
        }
        self
    }

    /// The line's time in milliseconds since the epoch, when it has one.
    pub fn at_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp).ok().map(|at| at.timestamp_millis())
    }

    /// The line's time in nanoseconds since the epoch, when it has one.
    pub fn at_ns(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp).ok().and_then(|at| at.timestamp_nanos_opt())
    }

    /// Bytes this line counts for in a response's byte budget.
    pub fn size(&self) -> usize {
        self.text.len() + self.timestamp.len() + 16
    }
}

/// The platform's timestamp before the first space of `raw`, if it has one, and the rest.
pub fn split_timestamp(raw: &str) -> (&str, &str) {
    match raw.split_once(' ') {
        Some((stamp, text)) if looks_like_timestamp(stamp) => (stamp, text),
        _ => ("", raw),
    }
}

fn looks_like_timestamp(stamp: &str) -> bool {
    stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T')
}

/// One line [`LineSplitter`] read, without its line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLine {
    pub text: String,
    /// The line was longer than [`MAX_READ_LINE_BYTES`]: this is its start, the rest was dropped.
    pub cut: bool,
}

/// Cuts one stream of bytes into lines, holding at most [`MAX_READ_LINE_BYTES`] of an unfinished line: a longer line
/// is given as its start, and the rest is dropped up to the next line break.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// Dropping the rest of a line that was too long.
    dropping: bool,
}

impl LineSplitter {
    /// Whether the bytes pushed so far end inside a line.
    pub fn is_mid_line(&self) -> bool {
        !self.pending.is_empty() || self.dropping
    }

    /// The lines `bytes` finish.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<ReadLine> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let (piece, ends) = match bytes.iter().position(|byte| *byte == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            bytes = &bytes[(piece.len() + usize::from(ends))..];
            if self.dropping {
                self.dropping = !ends;
                continue;
            }
            let room = MAX_READ_LINE_BYTES - self.pending.len();
            if piece.len() > room {
                self.pending.extend_from_slice(&piece[..room]);
                lines.push(self.take(true));
                self.dropping = !ends;
            } else {
                self.pending.extend_from_slice(piece);
                if ends {
                    lines.push(self.take(false));
                }
            }
        }
        lines
    }

    /// The unfinished line at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<ReadLine> {
        self.dropping = false;
        (!self.pending.is_empty()).then(|| self.take(false))
    }

    fn take(&mut self, cut: bool) -> ReadLine {
        let bytes = std::mem::take(&mut self.pending);
        let text = String::from_utf8_lossy(&bytes);
        ReadLine { text: text.strip_suffix('\r').unwrap_or(&text).to_owned(), cut }
    }
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
    fn a_long_line_is_cut_to_what_is_shown_only_when_asked() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let line = LogLine::parse(1, LogSource::Stdout, &long);
        assert_eq!(line.text, long, "kept whole for redaction");
        let shown = line.cut_to_shown();
        assert!(shown.text.len() <= MAX_LINE_BYTES + '…'.len_utf8() && shown.text.ends_with('…'));
        let read_cut = LogLine { read_cut: true, ..LogLine::parse(1, LogSource::Stdout, "short") };
        assert_eq!(read_cut.cut_to_shown().text, "short…");
    }

    #[test]
    fn the_splitter_joins_pieces_into_lines_and_bounds_an_endless_one() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"one\r\ntw"), [ReadLine { text: "one".into(), cut: false }]);
        assert!(splitter.is_mid_line());
        assert_eq!(
            splitter.push(b"o\n\nthree"),
            [ReadLine { text: "two".into(), cut: false }, ReadLine { text: String::new(), cut: false }]
        );
        assert_eq!(splitter.finish(), Some(ReadLine { text: "three".into(), cut: false }));
        assert!(!splitter.is_mid_line());

        let endless = vec![b'x'; MAX_READ_LINE_BYTES / 2 + 1];
        assert!(splitter.push(&endless).is_empty());
        let cut = splitter.push(&endless);
        assert_eq!(cut.len(), 1);
        assert_eq!((cut[0].text.len(), cut[0].cut), (MAX_READ_LINE_BYTES, true));
        assert!(splitter.push(&endless).is_empty(), "the rest of the line is dropped");
        assert_eq!(splitter.push(b"xx\nnext\n"), [ReadLine { text: "next".into(), cut: false }]);
    }
}
