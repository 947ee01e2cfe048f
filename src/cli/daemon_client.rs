//! `railyard rollback` and `railyard unpin`: requests to the running daemon's API.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use railyard::model;

use super::output::EXIT_FAILED;

/// POSTs `body` to the daemon's API at `server`, with the API token from RAILYARD_API_TOKEN.
pub async fn call_daemon(
    server: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let token = std::env::var("RAILYARD_API_TOKEN").unwrap_or_default();
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("cannot reach railyard at {server}; is `railyard serve` running there (--server)?"))?;
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap_or_default();
    Ok((status, answer))
}

pub async fn rollback(server: &str, env: &str, commit: &str, yes: bool, force: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/environments/{env}/rollback");
    let (status, planned) =
        call_daemon(server, &path, serde_json::json!({ "commit": commit, "force": force, "dryRun": true })).await?;
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
    let (status, done) = call_daemon(server, &path, serde_json::json!({ "commit": sha, "force": true })).await?;
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

pub async fn unpin(server: &str, env: &str) -> anyhow::Result<ExitCode> {
    let (status, answer) =
        call_daemon(server, &format!("/api/v1/environments/{env}/unpin"), serde_json::json!({})).await?;
    if status >= 300 {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!("{env} follows its branch again.");
    Ok(ExitCode::SUCCESS)
}
