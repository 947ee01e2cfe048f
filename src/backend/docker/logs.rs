//! App logs on Docker: each replica's container log through the Engine's logs API (timestamps on, stdout and stderr
//! told apart by the engine's stream framing), the replicas' streams merged as lines arrive. A replica is its
//! Compose container number; during an update two containers may carry one number, and both are read.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::{DockerBackend, DockerError};
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
    backend
        .docker
        .logs(&container, Some(options))
        .flat_map(move |chunk| {
            let lines: Vec<Result<LogLine, BackendError>> = match chunk {
                Ok(output) => lines_of(number, output).into_iter().map(Ok).collect(),
                Err(error) => {
                    let doing = format!("read the log of container {container}");
                    vec![Err(DockerError::from_bollard(&host, doing, error).into())]
                }
            };
            futures_util::stream::iter(lines)
        })
        .boxed()
}

/// The lines of one frame of the engine's log stream (one line as a rule; a terminal's output may hold several).
fn lines_of(number: u32, output: LogOutput) -> Vec<LogLine> {
    let (stream, message) = match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => (LogSource::Stdout, message),
        LogOutput::StdErr { message } => (LogSource::Stderr, message),
        LogOutput::StdIn { .. } => return Vec::new(),
    };
    let text = String::from_utf8_lossy(&message);
    text.lines().filter(|line| !line.is_empty()).map(|line| LogLine::parse(number, stream, line)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_lines_of_their_stream() {
        let frame = LogOutput::StdErr { message: "2026-12-05T10:00:00.5Z oops\n".into() };
        let lines = lines_of(3, frame);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].replica, lines[0].stream, lines[0].text.as_str()), (3, LogSource::Stderr, "oops"));
        assert!(lines_of(1, LogOutput::StdIn { message: "typed\n".into() }).is_empty());
    }
}
