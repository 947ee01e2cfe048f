//! `railyard rollback` and `railyard unpin`: requests to the running daemon's API (and what `railyard run` and
//! `railyard jobs` send it with).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use railyard::model;

use super::args::DaemonArgs;
use super::output::EXIT_FAILED;

/// The API token the CLI sends, and where it came from.
pub(super) struct Token {
    value: Option<String>,
    from: String,
}

impl Token {
    /// RAILYARD_API_TOKEN when set, else the file `--api-token-file` names.
    pub(super) fn of(daemon: &DaemonArgs) -> anyhow::Result<Token> {
        if let Some(value) = std::env::var("RAILYARD_API_TOKEN").ok().filter(|value| !value.trim().is_empty()) {
            return Ok(Token { value: Some(value.trim().to_owned()), from: "RAILYARD_API_TOKEN".to_owned() });
        }
        let Some(file) = &daemon.api_token_file else {
            return Ok(Token { value: None, from: String::new() });
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the API token file {} (--api-token-file)", file.display()))?;
        // The file may be written as serve's are (`name:token ...`); the CLI sends the one token it holds.
        let tokens = railyard::server::tokens::ApiTokens::parse(&text, &file.display().to_string())?;
        let value = tokens.only_secret().with_context(|| {
            let count = tokens.names().count();
            format!("the API token file {} holds {count} tokens; give the CLI a file with yours alone", file.display())
        })?;
        Ok(Token { value: Some(value.to_owned()), from: format!("the file {}", file.display()) })
    }

    /// What to tell someone whose token the daemon refused: where the CLI takes it from, and where serve's is.
    fn hint(&self) -> String {
        let sent = match &self.value {
            Some(_) => format!("the CLI sent the token from {}, which is not serve's", self.from),
            None => "the CLI sent no token".to_owned(),
        };
        format!(
            "{sent}. Give it serve's API token (the one its --api-token-file or RAILYARD_API_TOKEN holds): set \
             RAILYARD_API_TOKEN, or pass --api-token-file FILE (RAILYARD_API_TOKEN_FILE). For scripts/quickstart's \
             demo the token is in .railyard-demo/api-token: `source .railyard-demo/env` sets everything the CLI needs"
        )
    }
}

/// POSTs `body` to the daemon's API at `path`; the status and the JSON answer. A refused token is an error that
/// says where the token comes from.
pub(super) async fn call_daemon(
    daemon: &DaemonArgs,
    token: &Token,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let request = reqwest::Client::new().post(daemon_url(daemon, path)).json(&body).timeout(Duration::from_secs(120));
    let (status, answer) = send(daemon, token, request).await?;
    if status == 401 {
        let refused = answer["error"].as_str().unwrap_or("missing or wrong bearer token");
        anyhow::bail!("railyard at {} refused the request ({refused}); {}", daemon.server, token.hint());
    }
    out_of_scope(daemon, status, &answer)?;
    Ok((status, answer))
}

/// GETs `path` from the daemon's API (a read: the token opens it beyond loopback); the status and the JSON answer.
pub(super) async fn read_daemon(
    daemon: &DaemonArgs,
    token: &Token,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let request = reqwest::Client::new().get(daemon_url(daemon, path)).timeout(Duration::from_secs(60));
    let (status, answer) = send(daemon, token, request).await?;
    if status == 401 {
        anyhow::bail!("railyard at {} asks for credentials to read; {}", daemon.server, token.hint());
    }
    out_of_scope(daemon, status, &answer)?;
    Ok((status, answer))
}

/// A 403 from a known token outside its scope: asking again cannot help, the daemon says what the token lacks.
fn out_of_scope(daemon: &DaemonArgs, status: u16, answer: &serde_json::Value) -> anyhow::Result<()> {
    match answer["error"].as_str() {
        Some(refused) if status == 403 && refused.starts_with("the token `") => {
            anyhow::bail!("railyard at {} refused the request: {refused}", daemon.server)
        }
        _ => Ok(()),
    }
}

/// GETs `path` as a stream that goes on as long as the daemon sends (a followed log): the response, once its status
/// says it started. A refused token is an error that says where the token comes from.
pub(super) async fn stream_from_daemon(
    daemon: &DaemonArgs,
    token: &Token,
    path: &str,
) -> anyhow::Result<Result<reqwest::Response, (u16, serde_json::Value)>> {
    let response = sent(daemon, token, reqwest::Client::new().get(daemon_url(daemon, path))).await?;
    match response.status().as_u16() {
        200 => Ok(Ok(response)),
        401 => anyhow::bail!("railyard at {} asks for credentials to read; {}", daemon.server, token.hint()),
        status => {
            let answer = response.json().await.unwrap_or_default();
            out_of_scope(daemon, status, &answer)?;
            Ok(Err((status, answer)))
        }
    }
}

fn daemon_url(daemon: &DaemonArgs, path: &str) -> String {
    format!("{}{path}", daemon.server.trim_end_matches('/'))
}

/// Sends `request` with the token, if any; the status and the JSON answer (null when it is not JSON).
async fn send(
    daemon: &DaemonArgs,
    token: &Token,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = sent(daemon, token, request).await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// Sends `request` with the token, if any; the response, whatever its status.
async fn sent(
    daemon: &DaemonArgs,
    token: &Token,
    mut request: reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    if let Some(value) = &token.value {
        request = request.bearer_auth(value);
    }
    let server = &daemon.server;
    request
        .send()
        .await
        .with_context(|| format!("cannot reach railyard at {server}; is `railyard serve` running there (--server)?"))
}

pub async fn rollback(
    daemon: &DaemonArgs,
    env: &str,
    commit: &str,
    yes: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let token = Token::of(daemon)?;
    let path = format!("/api/v1/environments/{env}/rollback");
    let ask = serde_json::json!({ "commit": commit, "force": force, "dryRun": true });
    let (status, planned) = call_daemon(daemon, &token, &path, ask).await?;
    if status >= 300 {
        eprintln!("error: {}", planned["error"].as_str().unwrap_or("the daemon refused the rollback"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let sha = planned["commit"].as_str().unwrap_or(commit).to_owned();
    println!(
        "Rolling {env} back to {}:
{}",
        model::short_sha(&sha),
        planned["text"].as_str().unwrap_or("")
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not on a terminal; pass --yes to roll back without asking");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        print!("Roll back and pause auto-sync of {env}? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing was changed.");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let (status, done) =
        call_daemon(daemon, &token, &path, serde_json::json!({ "commit": sha, "force": true })).await?;
    if status >= 300 {
        eprintln!("error: {}", done["error"].as_str().unwrap_or("the daemon refused the rollback"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!(
        "{env} is pinned to {} by rollback, auto-sync paused; `railyard unpin --env {env}` resumes it.",
        model::short_sha(&sha)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn unpin(daemon: &DaemonArgs, env: &str) -> anyhow::Result<ExitCode> {
    let token = Token::of(daemon)?;
    let path = format!("/api/v1/environments/{env}/unpin");
    let (status, answer) = call_daemon(daemon, &token, &path, serde_json::json!({})).await?;
    if status >= 300 {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!("{env} follows its branch again.");
    Ok(ExitCode::SUCCESS)
}
