//! App logs on Docker: each replica's container log through the Engine's logs API (timestamps on, stdout and stderr
//! told apart by the engine's stream framing), the replicas' streams merged as lines arrive. A replica is its
//! Compose container number; during an update two containers may carry one number, and both are read. The engine
//! splits a line longer than 16 KiB into frames without a line break, each with its own timestamp: [`Frames`] joins
//! them again (bounded by [`LineSplitter`]) so that redaction sees the whole line.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::{DockerBackend, DockerError};
use crate::backend::logs::{LineSplitter, ReadLine, split_timestamp};
use crate::backend::{BackendError, LogLine, LogQuery, LogSource, LogStream};
use crate::model::Environment;

/// The merged log of `app`'s replicas in `env` that `query` asks for.
pub(super) async fn read(
    backend: &DockerBackend,
    env: &Environment,
    app: &str,
    query: &LogQuery,
) -> Result<LogStream, DockerError> {
    let replicas = backend.replicas(env, Some(app)).await?;
    let streams = replicas
        .into_iter()
        .filter(|replica| query.replica.is_none_or(|number| number == replica.observed.number))
        .map(|replica| container_log(backend, replica.observed.id, replica.observed.number, query));
    Ok(futures_util::stream::select_all(streams).boxed())
}

/// One container's log, as lines of replica `number`.
fn container_log(backend: &DockerBackend, container: String, number: u32, query: &LogQuery) -> LogStream {
    let options = LogsOptions {
        follow: query.follow,
        stdout: true,
        stderr: true,
        timestamps: true,
        since: query.since_seconds.map_or(0, |since| i32::try_from(since).unwrap_or(i32::MAX)),
        tail: query.tail_lines.to_string(),
        ..Default::default()
    };
    let host = backend.host.clone();
    let frames = backend.docker.logs(&container, Some(options)).boxed();
    let state = Some((frames, Frames::default()));
    futures_util::stream::unfold(state, move |state| {
        let (host, container) = (host.clone(), container.clone());
        async move {
            let (mut frames, mut joiner) = state?;
            let lines: Vec<Result<LogLine, BackendError>> = match frames.next().await {
                Some(Ok(output)) => joiner.lines_of(number, output).into_iter().map(Ok).collect(),
                Some(Err(error)) => {
                    let doing = format!("read the log of container {container}");
                    vec![Err(DockerError::from_bollard(&host, doing, error).into())]
                }
                None => return Some((joiner.finish(number).into_iter().map(Ok).collect(), None)),
            };
            Some((lines, Some((frames, joiner))))
        }
    })
    .flat_map(futures_util::stream::iter)
    .boxed()
}

/// One container's stdout and stderr, each cut into lines across the engine's frames.
#[derive(Default)]
struct Frames {
    stdout: LineSplitter,
    stderr: LineSplitter,
}

impl Frames {
    /// The lines one frame of the engine's log stream finishes (one as a rule; a terminal's output may hold
    /// several, and a frame without a line break continues in the next frame of its stream).
    fn lines_of(&mut self, number: u32, output: LogOutput) -> Vec<LogLine> {
        let (stream, message) = match output {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (LogSource::Stdout, message),
            LogOutput::StdErr { message } => (LogSource::Stderr, message),
            LogOutput::StdIn { .. } => return Vec::new(),
        };
        let splitter = self.splitter(stream);
        let mut bytes: &[u8] = &message;
        if splitter.is_mid_line() {
            // A continued line's frame has its own timestamp, which is not part of what the app printed.
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
            let (stamp, _) = split_timestamp(&head);
            let skip = if stamp.is_empty() { 0 } else { stamp.len() + 1 };
            bytes = &bytes[skip..];
        }
        let read = splitter.push(bytes);
        lines(number, stream, read)
    }

    /// The unfinished lines at the end of the log.
    fn finish(&mut self, number: u32) -> Vec<LogLine> {
        let mut finished = lines(number, LogSource::Stdout, self.stdout.finish());
        finished.extend(lines(number, LogSource::Stderr, self.stderr.finish()));
        finished
    }

    fn splitter(&mut self, stream: LogSource) -> &mut LineSplitter {
        if stream == LogSource::Stderr { &mut self.stderr } else { &mut self.stdout }
    }
}

fn lines(number: u32, stream: LogSource, read: impl IntoIterator<Item = ReadLine>) -> Vec<LogLine> {
    read.into_iter().filter(|line| !line.text.is_empty()).map(|line| LogLine::from_read(number, stream, line)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::logs::MAX_LINE_BYTES;

    #[test]
    fn frames_become_lines_of_their_stream() {
        let mut frames = Frames::default();
        let frame = LogOutput::StdErr { message: "2026-12-05T10:00:00.5Z oops\n".into() };
        let lines = frames.lines_of(3, frame);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].replica, lines[0].stream, lines[0].text.as_str()), (3, LogSource::Stderr, "oops"));
        assert!(frames.lines_of(1, LogOutput::StdIn { message: "typed\n".into() }).is_empty());
    }

    #[test]
    fn a_line_the_engine_split_into_frames_is_joined_again() {
        let mut frames = Frames::default();
        let start = format!("2026-12-05T10:00:00.5Z {}hunt", "x".repeat(MAX_LINE_BYTES - 4));
        assert!(frames.lines_of(1, LogOutput::StdOut { message: start.into() }).is_empty(), "not finished yet");
        let between = frames.lines_of(1, LogOutput::StdErr { message: "2026-12-05T10:00:00.6Z other\n".into() });
        assert_eq!(between[0].text, "other", "the other stream goes on");
        let end = frames.lines_of(1, LogOutput::StdOut { message: "2026-12-05T10:00:00.5Z er22 done\n".into() });
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].timestamp, "2026-12-05T10:00:00.5Z");
        assert!(end[0].text.ends_with("xxhunter22 done"), "{}", &end[0].text[MAX_LINE_BYTES - 10..]);
        assert!(frames.lines_of(1, LogOutput::StdOut { message: "2026-12-05T10:00:01Z last".into() }).is_empty());
        assert_eq!(frames.finish(1)[0].text, "last");
    }
}
