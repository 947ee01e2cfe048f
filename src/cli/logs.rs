//! `railyard logs APP`: what an app's replicas printed, through the running daemon's API (redacted there), printed
//! as `docker compose logs` does: `replica | time line`, newest last; `--follow` streams until Ctrl-C or the daemon
//! stops.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::args::{DaemonArgs, Output};
use super::daemon_client::{Token, read_daemon, stream_from_daemon};
use super::output::EXIT_FAILED;

/// What `railyard logs` was asked.
pub struct Request {
    pub app: String,
    pub env: String,
    pub follow: bool,
    pub since: Option<String>,
    pub replica: Option<u32>,
    pub tail: Option<usize>,
    pub output: Output,
}

impl Request {
    fn path(&self) -> String {
        let mut path = format!("/api/v1/environments/{}/apps/{}/logs?follow={}", self.env, self.app, self.follow);
        if let Some(since) = &self.since {
            path.push_str(&format!("&since={since}"));
        }
        if let Some(replica) = self.replica {
            path.push_str(&format!("&replica={replica}"));
        }
        if let Some(tail) = self.tail {
            path.push_str(&format!("&tail={tail}"));
        }
        if self.follow {
            path.push_str("&format=ndjson");
        }
        path
    }
}

pub async fn logs(daemon: &DaemonArgs, request: Request) -> anyhow::Result<ExitCode> {
    let token = Token::of(daemon)?;
    if !request.follow {
        let (status, answer) = read_daemon(daemon, &token, &request.path()).await?;
        if status != 200 {
            return Ok(refused(&answer));
        }
        let mut out = std::io::stdout().lock();
        for entry in answer["lines"].as_array().into_iter().flatten() {
            print_entry(&mut out, entry, request.output)?;
        }
        for error in answer["errors"].as_array().into_iter().flatten() {
            eprintln!("warning: {}", error.as_str().unwrap_or_default());
        }
        if answer["truncated"] == true {
            eprintln!(
                "(older lines were left out: at most {} lines and {} bytes)",
                answer["maxLines"], answer["maxBytes"]
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut response = match stream_from_daemon(daemon, &token, &request.path()).await? {
        Ok(response) => response,
        Err((_, answer)) => return Ok(refused(&answer)),
    };
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk?,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(chunk) = chunk else { return Ok(ExitCode::SUCCESS) };
        pending.extend_from_slice(&chunk);
        let mut out = std::io::stdout().lock();
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(entry) = serde_json::from_slice::<Value>(&line) {
                print_entry(&mut out, &entry, request.output)?;
            }
        }
        out.flush()?;
    }
}

fn refused(answer: &Value) -> ExitCode {
    eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused to show the log"));
    ExitCode::from(EXIT_FAILED)
}

/// One entry: a line as `replica | time text` (stderr lines go to stderr, as the app printed them), or a note.
fn print_entry(out: &mut impl Write, entry: &Value, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        writeln!(out, "{entry}")?;
        return Ok(());
    }
    if let Some(text) = entry["text"].as_str() {
        let replica = entry["replica"].as_u64().unwrap_or(0);
        let time = entry["timestamp"].as_str().unwrap_or_default();
        let line = format!("{replica} | {time} {text}");
        if entry["stream"] == "stderr" {
            eprintln!("{line}");
        } else {
            writeln!(out, "{line}")?;
        }
    } else if let Some(skipped) = entry["skipped"].as_u64() {
        eprintln!("... {skipped} lines skipped (this reader was slower than the app printed)");
    } else if let Some(error) = entry["error"].as_str() {
        eprintln!("warning: {error}");
    } else if let Some(ended) = entry["ended"].as_str() {
        eprintln!("... the stream ended: {ended}; run `railyard logs -f` again to follow the new replicas");
    }
    Ok(())
}
