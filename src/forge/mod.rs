//! Forge APIs (GitHub, GitLab, Gitea/Forgejo) for previews: the list of open pull requests, read page by page and
//! only ever handed on whole (any failed, malformed or inconsistent page fails the read: a partial list would tear
//! down previews whose pull requests are open), the commit status `railyard/plan` on a pull request's head, and
//! one sticky comment per pull request found again by a hidden marker and edited in place.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::daemon::previews::{PullRequestReport, PullRequestSource};
use crate::previews::PullRequest;

/// The hidden marker that finds railyard's comment again.
pub const COMMENT_MARKER: &str = "<!-- railyard:plan -->";
/// The commit status' context (GitHub, Gitea) or name (GitLab).
pub const STATUS_CONTEXT: &str = "railyard/plan";
/// A diff longer than this is folded in the comment.
const FOLD_LINES: usize = 40;
/// Pages read at most, so that a forge answering "next" for ever cannot hold the worker.
const MAX_PAGES: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(15);

/// The forges railyard speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    /// Gitea and Forgejo.
    Gitea,
}

impl ForgeKind {
    pub fn parse(name: &str) -> Option<ForgeKind> {
        match name {
            "github" => Some(ForgeKind::GitHub),
            "gitlab" => Some(ForgeKind::GitLab),
            "gitea" | "forgejo" => Some(ForgeKind::Gitea),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
            ForgeKind::Gitea => "gitea",
        }
    }

    /// The public service's API, when there is one.
    pub fn default_api(self) -> Option<&'static str> {
        match self {
            ForgeKind::GitHub => Some("https://api.github.com"),
            ForgeKind::GitLab => Some("https://gitlab.com/api/v4"),
            ForgeKind::Gitea => None,
        }
    }
}

/// How to reach one repository on a forge. The token never shows in Debug.
#[derive(Clone)]
pub struct ForgeSettings {
    pub kind: ForgeKind,
    /// The API's base, e.g. `https://api.github.com` or `https://git.example.com/api/v1`.
    pub api: String,
    /// `owner/name` (GitLab: the project's path or numeric id).
    pub repo: String,
    pub token: String,
    /// railyard's public URL, for the statuses' links; without it they link nowhere.
    pub public_url: Option<String>,
}

impl std::fmt::Debug for ForgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeSettings")
            .field("kind", &self.kind)
            .field("api", &self.api)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} {path}: {reason}; check --forge-url, --forge-repo and the token's access to the repository")]
    Request { forge: &'static str, path: String, reason: String },
    #[error(
        "{forge} {path} answered {status}: {body}; check the token's scopes (GitHub: pull requests and statuses, GitLab: api, Gitea: repository)"
    )]
    Status { forge: &'static str, path: String, status: u16, body: String },
    #[error("{forge} {path}: {reason}; nothing is torn down on a list that could not be read in full")]
    Incomplete { forge: &'static str, path: String, reason: String },
}

/// One forge repository's API.
#[derive(Debug, Clone)]
pub struct ForgeClient {
    settings: ForgeSettings,
    http: reqwest::Client,
}

impl ForgeClient {
    pub fn new(settings: ForgeSettings) -> ForgeClient {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("railyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        ForgeClient { settings, http }
    }

    fn forge(&self) -> &'static str {
        self.settings.kind.as_str()
    }

    /// The repository's path in API URLs: `repos/owner/name`, or `projects/<url-encoded path>`.
    fn repository(&self) -> String {
        match self.settings.kind {
            ForgeKind::GitLab => format!("projects/{}", self.settings.repo.replace('/', "%2F")),
            _ => format!("repos/{}", self.settings.repo),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/{path}", self.settings.api.trim_end_matches('/'));
        let token = &self.settings.token;
        let request = self.http.request(method, url).header("Accept", "application/json");
        match self.settings.kind {
            ForgeKind::GitHub => request.bearer_auth(token).header("X-GitHub-Api-Version", "2022-11-28"),
            ForgeKind::GitLab => request.header("PRIVATE-TOKEN", token),
            ForgeKind::Gitea => request.header("Authorization", format!("token {token}")),
        }
    }

    async fn send(&self, request: RequestBuilder, path: &str) -> Result<Response, ForgeError> {
        let response = request.send().await.map_err(|error| ForgeError::Request {
            forge: self.forge(),
            path: path.to_owned(),
            reason: without_url(&error),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        Err(ForgeError::Status { forge: self.forge(), path: path.to_owned(), status, body })
    }

    /// Every item of a paged listing, or an error: a page that fails, does not parse, or leaves the count the forge
    /// announced unmet fails the whole read.
    async fn all_pages(&self, first: &str) -> Result<Vec<Value>, ForgeError> {
        let mut items = Vec::new();
        let mut path = first.to_owned();
        let incomplete =
            |path: &str, reason: String| ForgeError::Incomplete { forge: self.forge(), path: path.to_owned(), reason };
        for _ in 0..MAX_PAGES {
            let response = self.send(self.request(Method::GET, &path), &path).await?;
            let next = next_page(&self.settings.api, &path, response.headers());
            let total = total_count(response.headers());
            let page: Vec<Value> = response
                .json()
                .await
                .map_err(|error| incomplete(&path, format!("the page is not a JSON list: {}", without_url(&error))))?;
            items.extend(page);
            match next {
                Some(next) => path = next,
                None => {
                    if let Some(total) = total
                        && total != items.len()
                    {
                        return Err(incomplete(&path, format!("{} items read of the {total} announced", items.len())));
                    }
                    return Ok(items);
                }
            }
        }
        Err(incomplete(&path, format!("more than {MAX_PAGES} pages")))
    }

    /// The open pull (merge) requests of the repository.
    pub async fn list_open(&self) -> Result<Vec<PullRequest>, ForgeError> {
        let first = match self.settings.kind {
            ForgeKind::GitHub => format!("{}/pulls?state=open&per_page=100", self.repository()),
            ForgeKind::GitLab => format!("{}/merge_requests?state=opened&per_page=100", self.repository()),
            ForgeKind::Gitea => format!("{}/pulls?state=open&limit=50&page=1", self.repository()),
        };
        let items = self.all_pages(&first).await?;
        items
            .into_iter()
            .map(|item| {
                self.pull_request(&item).ok_or_else(|| ForgeError::Incomplete {
                    forge: self.forge(),
                    path: first.clone(),
                    reason: "an item of the list is not a pull request".to_owned(),
                })
            })
            .collect()
    }

    fn pull_request(&self, item: &Value) -> Option<PullRequest> {
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let labels = |values: &Value| -> Vec<String> {
            values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|label| label.as_str().or(label["name"].as_str()).map(str::to_owned))
                .collect()
        };
        let now = crate::daemon::now_ms();
        match self.settings.kind {
            ForgeKind::GitLab => Some(PullRequest {
                number: item["iid"].as_u64()?,
                title: text(&item["title"]).unwrap_or_default(),
                author: text(&item["author"]["username"]).unwrap_or_default(),
                head_sha: text(&item["sha"])?,
                head_branch: text(&item["source_branch"]).unwrap_or_default(),
                from_fork: item["source_project_id"] != item["target_project_id"],
                labels: labels(&item["labels"]),
                author_trusted: false,
                approved_sha: None,
                pushed_ms: now,
            }),
            _ => {
                let head_repo = item["head"]["repo"]["full_name"].as_str();
                let base_repo = item["base"]["repo"]["full_name"].as_str();
                Some(PullRequest {
                    number: item["number"].as_u64()?,
                    title: text(&item["title"]).unwrap_or_default(),
                    author: text(&item["user"]["login"]).unwrap_or_default(),
                    head_sha: text(&item["head"]["sha"])?,
                    head_branch: text(&item["head"]["ref"]).unwrap_or_default(),
                    from_fork: head_repo.is_none() || head_repo != base_repo,
                    labels: labels(&item["labels"]),
                    author_trusted: false,
                    approved_sha: None,
                    pushed_ms: now,
                })
            }
        }
    }

    /// Sets the commit status `railyard/plan` on `sha`.
    pub async fn set_status(
        &self,
        sha: &str,
        success: bool,
        description: &str,
        target: Option<String>,
    ) -> Result<(), ForgeError> {
        let description: String = description.chars().take(140).collect();
        let (path, body) = match self.settings.kind {
            ForgeKind::GitLab => (
                format!("{}/statuses/{sha}", self.repository()),
                json!({ "state": if success { "success" } else { "failed" }, "name": STATUS_CONTEXT,
                        "description": description, "target_url": target }),
            ),
            _ => (
                format!("{}/statuses/{sha}", self.repository()),
                json!({ "state": if success { "success" } else { "failure" }, "context": STATUS_CONTEXT,
                        "description": description, "target_url": target }),
            ),
        };
        self.send(self.request(Method::POST, &path).json(&body), &path).await.map(drop)
    }

    /// Creates railyard's comment on pull request `number`, or edits the one carrying [`COMMENT_MARKER`].
    pub async fn upsert_comment(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        let listing = match self.settings.kind {
            ForgeKind::GitLab => format!("{}/merge_requests/{number}/notes?per_page=100", self.repository()),
            ForgeKind::GitHub => format!("{}/issues/{number}/comments?per_page=100", self.repository()),
            ForgeKind::Gitea => format!("{}/issues/{number}/comments?limit=50&page=1", self.repository()),
        };
        let comments = self.all_pages(&listing).await?;
        let existing = comments
            .iter()
            .find(|comment| comment["body"].as_str().is_some_and(|text| text.contains(COMMENT_MARKER)))
            .and_then(|comment| comment["id"].as_u64());
        let payload = json!({ "body": body });
        let (method, path) = match (self.settings.kind, existing) {
            (ForgeKind::GitLab, Some(id)) => {
                (Method::PUT, format!("{}/merge_requests/{number}/notes/{id}", self.repository()))
            }
            (ForgeKind::GitLab, None) => (Method::POST, format!("{}/merge_requests/{number}/notes", self.repository())),
            (_, Some(id)) => (Method::PATCH, format!("{}/issues/comments/{id}", self.repository())),
            (_, None) => (Method::POST, format!("{}/issues/{number}/comments", self.repository())),
        };
        self.send(self.request(method, &path).json(&payload), &path).await.map(drop)
    }

    /// The status and (when `report.comment`) the sticky comment, each tried `attempts` times with doubling waits.
    pub async fn post_report(
        &self,
        report: &PullRequestReport,
        attempts: u32,
        first_wait: Duration,
    ) -> Result<(), ForgeError> {
        let target =
            self.settings.public_url.as_ref().map(|url| format!("{}{}", url.trim_end_matches('/'), report.page));
        let summary = report.summary.clone();
        with_backoff(attempts, first_wait, || {
            self.set_status(&report.head_sha, report.success, &summary, target.clone())
        })
        .await?;
        if report.comment {
            let body = comment_body(report, target.as_deref());
            with_backoff(attempts, first_wait, || self.upsert_comment(report.number, &body)).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PullRequestSource for ForgeClient {
    async fn open_pull_requests(&self) -> Result<Vec<PullRequest>, String> {
        self.list_open().await.map_err(|error| error.to_string())
    }

    fn uses_merge_requests(&self) -> bool {
        self.settings.kind == ForgeKind::GitLab
    }

    async fn report(&self, report: PullRequestReport) -> Result<(), String> {
        self.post_report(&report, 5, Duration::from_secs(1)).await.map_err(|error| error.to_string())
    }
}

/// Runs `attempt` until it succeeds, at most `attempts` times, waiting `first_wait` and doubling between tries.
pub async fn with_backoff<T, E, F, Fut>(attempts: u32, first_wait: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = first_wait;
    let mut tried = 1;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if tried >= attempts.max(1) => return Err(error),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                tried += 1;
            }
        }
    }
}

/// The sticky comment: the marker, the summary, the preview's state and URLs, and the plan (folded when long).
pub fn comment_body(report: &PullRequestReport, page: Option<&str>) -> String {
    let mut body =
        format!("{COMMENT_MARKER}\n### railyard: what merging changes in production\n\n**{}**", report.summary);
    body.push_str(&format!(" · preview: {}\n", report.preview));
    if !report.urls.is_empty() {
        body.push_str("\nPreview: ");
        body.push_str(&report.urls.iter().map(|url| format!("<{url}>")).collect::<Vec<_>>().join(" · "));
        body.push('\n');
    }
    if !report.diff.trim().is_empty() {
        let fenced = format!("```diff\n{}\n```\n", report.diff.trim_end().replace("```", "`\u{200b}``"));
        if report.diff.lines().count() > FOLD_LINES {
            body.push_str(&format!(
                "\n<details><summary>The plan ({} lines)</summary>\n\n{fenced}\n</details>\n",
                report.diff.lines().count()
            ));
        } else {
            body.push('\n');
            body.push_str(&fenced);
        }
    }
    if let Some(page) = page {
        body.push_str(&format!("\n[On railyard]({page}) · commit `{}`\n", crate::model::short_sha(&report.head_sha)));
    }
    body
}

/// The path of the next page, from `Link: <…>; rel="next"` (GitHub, Gitea, GitLab) or `X-Next-Page` (GitLab).
fn next_page(api: &str, current: &str, headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link").and_then(|value| value.to_str().ok()).and_then(|link| {
        link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
            let url = part.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
            Some(
                url.strip_prefix(api.trim_end_matches('/')).map_or(url, |path| path).trim_start_matches('/').to_owned(),
            )
        })
    });
    link.or_else(|| {
        let next = headers.get("x-next-page")?.to_str().ok()?.trim();
        let number: u32 = next.parse().ok()?;
        let without = current.split('&').filter(|part| !part.starts_with("page=")).collect::<Vec<_>>().join("&");
        Some(format!("{without}&page={number}"))
    })
}

/// The number of items the forge says the listing holds (`X-Total-Count` on Gitea, `X-Total` on GitLab).
fn total_count(headers: &reqwest::header::HeaderMap) -> Option<usize> {
    ["x-total-count", "x-total"].iter().find_map(|name| headers.get(*name)?.to_str().ok()?.trim().parse().ok())
}

/// reqwest's error without the URL it carries (no secret is in our URLs, but the path is said apart).
fn without_url(error: &reqwest::Error) -> String {
    let mut error_text = error.to_string();
    if let Some(url) = error.url() {
        error_text = error_text.replace(url.as_str(), "").replace(" ()", "");
    }
    error_text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(diff_lines: usize) -> PullRequestReport {
        PullRequestReport {
            number: 7,
            head_sha: "0123456789abcdef".repeat(2),
            success: true,
            summary: "1 to update".to_owned(),
            diff: (0..diff_lines).map(|line| format!("+ line {line}\n")).collect(),
            urls: vec!["http://web-pr-7.preview.test".to_owned()],
            preview: "running".to_owned(),
            page: "/env/pr-7".to_owned(),
            comment: true,
        }
    }

    #[test]
    fn the_comment_carries_the_marker_and_folds_long_plans() {
        let short = comment_body(&report(3), Some("https://deploy.example.com/env/pr-7"));
        assert!(short.starts_with(COMMENT_MARKER));
        assert!(short.contains("**1 to update**") && short.contains("<http://web-pr-7.preview.test>"));
        assert!(short.contains("```diff") && !short.contains("<details>"));
        assert!(comment_body(&report(41), None).contains("<details><summary>The plan (41 lines)"));
    }

    #[test]
    fn next_pages_come_from_link_or_x_next_page() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "link",
            "<https://api.github.com/repos/a/b/pulls?state=open&page=2>; rel=\"next\", <https://api.github.com/repos/a/b/pulls?page=3>; rel=\"last\""
                .parse()
                .expect("header"),
        );
        assert_eq!(
            next_page("https://api.github.com", "repos/a/b/pulls", &headers).as_deref(),
            Some("repos/a/b/pulls?state=open&page=2")
        );
        let mut gitlab = reqwest::header::HeaderMap::new();
        gitlab.insert("x-next-page", "3".parse().expect("header"));
        assert_eq!(
            next_page("https://gitlab.com/api/v4", "projects/1/merge_requests?state=opened&page=2", &gitlab).as_deref(),
            Some("projects/1/merge_requests?state=opened&page=3")
        );
        gitlab.insert("x-next-page", "".parse().expect("header"));
        assert_eq!(next_page("https://gitlab.com/api/v4", "x", &gitlab), None);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_gives_up_after_the_attempts() {
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        let outcome: Result<(), &str> = with_backoff(4, Duration::from_secs(1), || {
            tries += 1;
            async { Err("down") }
        })
        .await;
        assert_eq!((outcome, tries), (Err("down"), 4));
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2 + 4));
        let mut tries = 0;
        let outcome: Result<u32, &str> = with_backoff(4, Duration::from_secs(1), || {
            tries += 1;
            let now = tries;
            async move { if now < 3 { Err("down") } else { Ok(now) } }
        })
        .await;
        assert_eq!(outcome, Ok(3));
    }
}
