//! Forge APIs (GitHub, GitLab, Gitea/Forgejo) for previews: the list of open pull requests, read page by page and
//! only ever handed on whole (any failed, malformed or inconsistent page fails the read: a partial list would tear
//! down previews whose pull requests are open), the commit status `railyard/plan` on a pull request's head, and
//! one sticky comment per pull request found again by a hidden marker and edited in place.
//!
//! Everything a forge returns is hostile input. The sticky comment is found by its marker *and* its author (the
//! token's own user, asked once from `GET /user`), so that anyone can write the marker without railyard editing
//! their comment; everything quoted from git or logs goes into the comment as code, which renders no link, mention,
//! image or HTML; and the token is never sent to another origin after a redirect. Whether a pull request's author
//! may push to the repository is the forge's word, asked per author and failing closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tracing::warn;

use crate::outbound::{redirect_origin, same_origin_redirects};
use crate::previews::PullRequest;
use crate::previews::{PullRequestReport, PullRequestSource};

/// The hidden marker that finds railyard's comment again.
pub const COMMENT_MARKER: &str = "<!-- railyard:plan -->";
/// The commit status' context (GitHub, Gitea) or name (GitLab).
pub const STATUS_CONTEXT: &str = "railyard/plan";
/// A diff longer than this is folded in the comment.
const FOLD_LINES: usize = 40;
/// Pages read at most, so that a forge answering "next" for ever cannot hold the worker.
const MAX_PAGES: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(15);
/// GitLab's access level of a Maintainer: the least that may merge, so the least whose pull requests are trusted.
const GITLAB_MAINTAINER: u64 = 40;
/// GitHub's `author_association` values of people who may push to the repository.
const GITHUB_TRUSTED: [&str; 3] = ["OWNER", "MEMBER", "COLLABORATOR"];

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
        "{forge} {path} answered 401 Unauthorized: the forge does not accept the token (wrong, expired or revoked); check the token given by --forge-token-file or RAILYARD_FORGE_TOKEN"
    )]
    Unauthorized { forge: &'static str, path: String },
    #[error(
        "{forge} {path} answered 403 Forbidden ({body}): the token may not do this; give it the scopes railyard needs (GitHub: pull requests read, commit statuses and issues write; GitLab: api; Gitea: repository and issues write)"
    )]
    Forbidden { forge: &'static str, path: String, body: String },
    #[error(
        "{forge} {path} refused the request as invalid ({status}: {body}); the commit must be in the repository the forge is asked about: check that --forge-repo names the repository railyard deploys from"
    )]
    Unprocessable { forge: &'static str, path: String, status: u16, body: String },
    #[error(
        "{forge} {path}: the API rate limit is used up ({}); railyard tries again once it resets, or at the next change; a token of a user or bot account of railyard's own has a limit of its own",
        resets(.wait)
    )]
    RateLimited { forge: &'static str, path: String, wait: Option<Duration> },
    #[error(
        "{forge} {path} answered {status}: {body}; check the token's scopes (GitHub: pull requests and statuses, GitLab: api, Gitea: repository)"
    )]
    Status { forge: &'static str, path: String, status: u16, body: String },
    #[error("{forge} {path}: {reason}; nothing is torn down on a list that could not be read in full")]
    Incomplete { forge: &'static str, path: String, reason: String },
    #[error(
        "{forge} {path} redirected to another origin, {to}, which was not followed so that the token is not sent there; point --forge-url at the API's own address"
    )]
    Redirected { forge: &'static str, path: String, to: String },
    #[error(
        "{forge} GET {path} did not say who the token belongs to ({reason}); railyard edits only its own comment, so give --forge-token-file a token of a user (or bot account) that may read its own profile"
    )]
    WhoAmI {
        forge: &'static str,
        path: String,
        reason: String,
        /// Whether asking again may help (a server error, a rate limit): not for a token the forge refuses.
        transient: bool,
    },
}

/// When a rate limit resets, for its error.
fn resets(wait: &Option<Duration>) -> String {
    match wait {
        Some(wait) => format!("it resets in {} s", wait.as_secs()),
        None => "the forge did not say when it resets".to_owned(),
    }
}

/// A rate limit that resets later than this is not waited for: the error says so, and the next change reports again.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

impl ForgeError {
    /// Whether the same request may succeed if sent again: not when the forge refused the token, its rights or the
    /// request itself, nor after a redirect elsewhere; a rate limit only when it resets soon.
    fn transient(&self) -> bool {
        match self {
            ForgeError::Request { .. } | ForgeError::Incomplete { .. } => true,
            ForgeError::Status { status, .. } => *status >= 500 || *status == 408,
            ForgeError::RateLimited { wait, .. } => wait.is_none_or(|wait| wait <= MAX_RATE_LIMIT_WAIT),
            ForgeError::WhoAmI { transient, .. } => *transient,
            ForgeError::Unauthorized { .. }
            | ForgeError::Forbidden { .. }
            | ForgeError::Unprocessable { .. }
            | ForgeError::Redirected { .. } => false,
        }
    }
}

/// How long the forge asks to wait before the next request, when `status` with `headers` says the rate limit is used
/// up: GitHub's 403 or 429 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch seconds) or with
/// `retry-after` (its secondary limit), GitLab's (and any proxy's) 429 with `Retry-After` or `RateLimit-Reset`.
/// `Some(None)`: rate limited, without saying until when. `None`: not a rate limit.
fn rate_limit(status: u16, headers: &reqwest::header::HeaderMap, now_secs: u64) -> Option<Option<Duration>> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let used_up = number("x-ratelimit-remaining") == Some(0) || number("ratelimit-remaining") == Some(0);
    let retry_after = number("retry-after");
    if !(status == 429 || (status == 403 && (used_up || retry_after.is_some()))) {
        return None;
    }
    let reset = number("x-ratelimit-reset").or_else(|| number("ratelimit-reset"));
    let wait = retry_after.or_else(|| reset.map(|reset| reset.saturating_sub(now_secs)));
    Some(wait.map(Duration::from_secs))
}

/// Who the token belongs to, as the forge names comment authors: GitHub and Gitea by login (and id), GitLab by id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    id: Option<u64>,
    login: Option<String>,
}

impl Identity {
    /// Whether `author` (a comment's `user` or `author` object) is this identity. An id decides when both sides
    /// have one (logins can be renamed and reused); otherwise the login, exactly.
    fn wrote(&self, author: &Value) -> bool {
        if let (Some(id), Some(theirs)) = (self.id, author["id"].as_u64()) {
            return id == theirs;
        }
        let theirs = author["login"].as_str().or(author["username"].as_str());
        matches!((&self.login, theirs), (Some(login), Some(theirs)) if !login.is_empty() && login == theirs)
    }
}

/// One forge repository's API.
#[derive(Debug, Clone)]
pub struct ForgeClient {
    settings: ForgeSettings,
    http: reqwest::Client,
    /// The token's own user, asked once (a failed ask is asked again next time).
    me: Arc<tokio::sync::OnceCell<Identity>>,
}

impl ForgeClient {
    pub fn new(settings: ForgeSettings) -> ForgeClient {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("railyard/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin_redirects())
            .build()
            .unwrap_or_default();
        ForgeClient { settings, http, me: Arc::default() }
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
        if response.status().is_redirection() {
            let to = redirect_origin(&response);
            warn!(forge = self.forge(), %path, %to, "the forge redirected to another origin; not followed");
            return Err(ForgeError::Redirected { forge: self.forge(), path: path.to_owned(), to });
        }
        let (forge, path) = (self.forge(), path.to_owned());
        let status = response.status().as_u16();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        if let Some(wait) = rate_limit(status, response.headers(), now) {
            warn!(forge, %path, wait_s = wait.map(|wait| wait.as_secs()), "the forge's rate limit is used up");
            return Err(ForgeError::RateLimited { forge, path, wait });
        }
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        Err(match status {
            401 => ForgeError::Unauthorized { forge, path },
            403 => ForgeError::Forbidden { forge, path, body },
            400 | 422 => ForgeError::Unprocessable { forge, path, status, body },
            _ => ForgeError::Status { forge, path, status, body },
        })
    }

    /// Runs `attempt` until it succeeds, at most `attempts` times: after a transient failure it waits `first_wait`,
    /// doubling, or as long as a rate limit asks; a failure that would only repeat (a refused token, missing rights,
    /// an invalid request) is returned at once.
    async fn patiently<T, F, Fut>(&self, attempts: u32, first_wait: Duration, attempt: F) -> Result<T, ForgeError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForgeError>>,
    {
        use crate::outbound::{Retry, with_backoff_unless};
        with_backoff_unless(attempts, first_wait, attempt, |error| match error {
            _ if !error.transient() => Retry::No,
            ForgeError::RateLimited { wait: Some(reset), .. } => Retry::After(*reset),
            _ => Retry::Backoff,
        })
        .await
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

    /// The open pull (merge) requests of the repository, each with the forge's word on whether its author may push.
    pub async fn list_open(&self) -> Result<Vec<PullRequest>, ForgeError> {
        let first = match self.settings.kind {
            ForgeKind::GitHub => format!("{}/pulls?state=open&per_page=100", self.repository()),
            ForgeKind::GitLab => format!("{}/merge_requests?state=opened&per_page=100", self.repository()),
            ForgeKind::Gitea => format!("{}/pulls?state=open&limit=50&page=1", self.repository()),
        };
        let items = self.all_pages(&first).await?;
        let mut open = Vec::with_capacity(items.len());
        // One lookup per author per list: the answer can change between lists (a collaborator removed).
        let mut trusted: BTreeMap<String, bool> = BTreeMap::new();
        for item in &items {
            let mut pr = self.pull_request(item).ok_or_else(|| ForgeError::Incomplete {
                forge: self.forge(),
                path: first.clone(),
                reason: "an item of the list is not a pull request".to_owned(),
            })?;
            if self.settings.kind != ForgeKind::GitHub {
                let author = match self.settings.kind {
                    ForgeKind::GitLab => item["author"]["id"].as_u64().map(|id| id.to_string()),
                    _ => Some(pr.author.clone()).filter(|login| !login.is_empty()),
                };
                pr.author_trusted = match author {
                    Some(author) => match trusted.get(&author) {
                        Some(known) => *known,
                        None => {
                            let answer = self.author_may_push(&author).await;
                            trusted.insert(author, answer);
                            answer
                        }
                    },
                    None => false,
                };
            }
            open.push(pr);
        }
        Ok(open)
    }

    /// Whether `author` (GitLab: the user's id; Gitea: the login) may push: a GitLab project member of Maintainer
    /// level or above, a Gitea collaborator. Any failure is "no": trust is never assumed.
    async fn author_may_push(&self, author: &str) -> bool {
        if author.is_empty() || !author.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return false;
        }
        // Gitea does not list a user-owned repository's owner among its collaborators.
        if self.settings.kind == ForgeKind::Gitea && self.settings.repo.split('/').next() == Some(author) {
            return true;
        }
        let path = match self.settings.kind {
            ForgeKind::GitLab => format!("{}/members/all/{author}", self.repository()),
            _ => format!("{}/collaborators/{author}", self.repository()),
        };
        let response = match self.send(self.request(Method::GET, &path), &path).await {
            Ok(response) => response,
            // 404 is the documented "not a member / not a collaborator".
            Err(ForgeError::Status { status: 404, .. }) => return false,
            Err(error) => {
                warn!(forge = self.forge(), %error, "cannot ask whether a pull request's author may push; taken as untrusted");
                return false;
            }
        };
        match self.settings.kind {
            ForgeKind::GitLab => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|member| member["access_level"].as_u64())
                .is_some_and(|level| level >= GITLAB_MAINTAINER),
            _ => response.status() == StatusCode::NO_CONTENT,
        }
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
        let now = crate::clock::now_ms();
        match self.settings.kind {
            ForgeKind::GitLab => Some(PullRequest {
                number: item["iid"].as_u64()?,
                title: text(&item["title"]).unwrap_or_default(),
                author: text(&item["author"]["username"]).unwrap_or_default(),
                head_sha: text(&item["sha"])?,
                head_branch: text(&item["source_branch"]).unwrap_or_default(),
                from_fork: item["source_project_id"] != item["target_project_id"],
                labels: labels(&item["labels"]),
                // Asked of the members API by `list_open`.
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
                    // GitHub says it in the item; Gitea is asked by `list_open`.
                    author_trusted: self.settings.kind == ForgeKind::GitHub
                        && github_association_trusted(item["author_association"].as_str()),
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

    /// The token's own user, asked once of `GET /user` and kept.
    async fn me(&self) -> Result<&Identity, ForgeError> {
        self.me
            .get_or_try_init(|| async {
                let path = "user";
                let failed = |reason: String, transient: bool| ForgeError::WhoAmI {
                    forge: self.forge(),
                    path: path.to_owned(),
                    reason,
                    transient,
                };
                let response = self
                    .send(self.request(Method::GET, path), path)
                    .await
                    .map_err(|error| failed(error.to_string(), error.transient()))?;
                let user: Value = response.json().await.map_err(|error| failed(without_url(&error), true))?;
                let identity = Identity {
                    id: user["id"].as_u64(),
                    login: user["login"].as_str().or(user["username"].as_str()).map(str::to_owned),
                };
                // GitLab names note authors by id; the others by login (their id is a bonus).
                let known = match self.settings.kind {
                    ForgeKind::GitLab => identity.id.is_some(),
                    _ => identity.login.as_ref().is_some_and(|login| !login.is_empty()),
                };
                if known { Ok(identity) } else { Err(failed("the answer names no user".to_owned(), false)) }
            })
            .await
    }

    /// Creates railyard's comment on pull request `number`, or edits the one carrying [`COMMENT_MARKER`] that the
    /// token's own user wrote. A comment with the marker by anyone else is left alone: anyone can write the marker.
    pub async fn upsert_comment(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        let me = self.me().await?.clone();
        let listing = match self.settings.kind {
            ForgeKind::GitLab => format!("{}/merge_requests/{number}/notes?per_page=100", self.repository()),
            ForgeKind::GitHub => format!("{}/issues/{number}/comments?per_page=100", self.repository()),
            ForgeKind::Gitea => format!("{}/issues/{number}/comments?limit=50&page=1", self.repository()),
        };
        let comments = self.all_pages(&listing).await?;
        let author = |comment: &Value| match self.settings.kind {
            ForgeKind::GitLab => comment["author"].clone(),
            _ => comment["user"].clone(),
        };
        let existing = comments
            .iter()
            .filter(|comment| me.wrote(&author(comment)))
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

    /// The status and (when `report.comment`) the sticky comment, each tried `attempts` times with doubling waits (or
    /// as long as a rate limit asks, up to a minute); a refused token, missing rights or an invalid request is
    /// reported at once.
    pub async fn post_report(
        &self,
        report: &PullRequestReport,
        attempts: u32,
        first_wait: Duration,
    ) -> Result<(), ForgeError> {
        let target =
            self.settings.public_url.as_ref().map(|url| format!("{}{}", url.trim_end_matches('/'), report.page));
        let summary = report.summary.clone();
        self.patiently(attempts, first_wait, || {
            self.set_status(&report.head_sha, report.success, &summary, target.clone())
        })
        .await?;
        if report.comment {
            let body = comment_body(report, target.as_deref());
            self.patiently(attempts, first_wait, || self.upsert_comment(report.number, &body)).await?;
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

/// Whether GitHub's `author_association` says the author may push.
pub fn github_association_trusted(association: Option<&str>) -> bool {
    association.is_some_and(|association| GITHUB_TRUSTED.contains(&association))
}

/// The sticky comment: the marker, the summary, the preview's state and URLs, and the plan (folded when long).
/// Every quoted text (summary, errors, preview state, plan) is code: a forge renders no link, mention, image or
/// HTML in code, and the fences are longer than any backtick run inside, so nothing can close them.
pub fn comment_body(report: &PullRequestReport, page: Option<&str>) -> String {
    let mut body = format!(
        "{COMMENT_MARKER}\n### railyard: what merging changes in production\n\n**{}**",
        markdown_code_span(&report.summary)
    );
    body.push_str(&format!(" · preview: {}\n", markdown_code_span(&report.preview)));
    if !report.urls.is_empty() {
        body.push_str("\nPreview: ");
        body.push_str(&report.urls.iter().map(|url| markdown_url(url)).collect::<Vec<_>>().join(" · "));
        body.push('\n');
    }
    if !report.diff.trim().is_empty() {
        let fenced = markdown_fence("diff", report.diff.trim_end());
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
        body.push_str(&format!(
            "\n[On railyard]({page}) · commit {}\n",
            markdown_code_span(crate::model::short_sha(&report.head_sha))
        ));
    }
    body
}

/// The longest run of `mark` in `text`.
fn longest_run(text: &str, mark: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == mark { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// `text` as a fenced code block (CommonMark): the fence is longer than any backtick run in `text`, so no line of
/// it can close the block; inside, nothing is Markdown or HTML.
pub fn markdown_fence(info: &str, text: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
    let text: String = text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { ' ' } else { c }).collect();
    format!("{fence}{info}\n{text}\n{fence}\n")
}

/// One line of `text` as an inline code span (CommonMark): line breaks and control characters become spaces (a
/// line break could start a heading or a block that ends the span), the backtick string is longer than any run
/// inside, and a space pads text that starts or ends with a backtick.
pub fn markdown_code_span(text: &str) -> String {
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();
    if text.is_empty() {
        return "` `".to_owned();
    }
    let ticks = "`".repeat(longest_run(text, '`') + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// A preview URL as an autolink when it is a plain `http(s)://host[:port][/path]`; anything else is shown as code.
fn markdown_url(url: &str) -> String {
    let plain = (url.starts_with("http://") || url.starts_with("https://"))
        && url.chars().all(|c| c.is_ascii_alphanumeric() || "-._:/".contains(c));
    if plain { format!("<{url}>") } else { markdown_code_span(url) }
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
        assert!(short.contains("**`1 to update`**") && short.contains("<http://web-pr-7.preview.test>"), "{short}");
        assert!(short.contains("```diff") && !short.contains("<details>"));
        assert!(short.contains("commit `0123456789ab`"), "{short}");
        assert!(comment_body(&report(41), None).contains("<details><summary>The plan (41 lines)"));
    }

    #[test]
    fn code_spans_hold_any_one_line_whole() {
        assert_eq!(markdown_code_span("1 to update"), "`1 to update`");
        assert_eq!(markdown_code_span("a ` b `` c"), "```a ` b `` c```", "longer than the longest run inside");
        assert_eq!(markdown_code_span("`x`"), "`` `x` ``", "padded when it starts or ends with a backtick");
        // A line break could start a heading, a list or an HTML block that ends the span: it is a space.
        assert_eq!(markdown_code_span("ok\n# Approved <img src=x>\r\n"), "`ok # Approved <img src=x>`");
        assert_eq!(markdown_code_span(""), "` `");
        assert_eq!(markdown_code_span("@mallory [x](http://evil.example)"), "`@mallory [x](http://evil.example)`");
    }

    #[test]
    fn fences_are_longer_than_any_backtick_run_inside() {
        let hostile = "```\n</details>\n@mallory <img src=http://evil.example/x>\n``````\n[x](http://evil.example)";
        let fenced = markdown_fence("diff", hostile);
        let fence = "```````";
        assert!(fenced.starts_with(&format!("{fence}diff\n")) && fenced.ends_with(&format!("\n{fence}\n")), "{fenced}");
        // No line inside is as long a fence as the opening one, so none closes it.
        let inner: Vec<&str> = fenced.lines().skip(1).collect();
        let closing = inner.iter().position(|line| line.starts_with(fence)).expect("a closing fence");
        assert_eq!(closing, inner.len() - 1, "{fenced}");
        assert_eq!(markdown_fence("", "plain"), "```\nplain\n```\n");
    }

    #[test]
    fn preview_urls_are_links_only_when_plain() {
        assert_eq!(markdown_url("http://web-pr-7.preview.test:8080/"), "<http://web-pr-7.preview.test:8080/>");
        assert_eq!(markdown_url("http://x.test/><img src=y>"), "`http://x.test/><img src=y>`");
        assert_eq!(markdown_url("javascript:alert(1)"), "`javascript:alert(1)`");
    }

    #[test]
    fn github_trusts_owners_members_and_collaborators_only() {
        for (association, trusted) in [
            (Some("OWNER"), true),
            (Some("MEMBER"), true),
            (Some("COLLABORATOR"), true),
            (Some("CONTRIBUTOR"), false),
            (Some("FIRST_TIME_CONTRIBUTOR"), false),
            (Some("FIRST_TIMER"), false),
            (Some("NONE"), false),
            (Some("owner"), false),
            (None, false),
        ] {
            assert_eq!(github_association_trusted(association), trusted, "{association:?}");
        }
    }

    #[test]
    fn a_comment_is_ours_by_id_when_both_have_one_else_by_login() {
        let me = Identity { id: Some(41), login: Some("railyard-bot".to_owned()) };
        assert!(me.wrote(&json!({ "login": "railyard-bot", "id": 41 })));
        assert!(!me.wrote(&json!({ "login": "railyard-bot", "id": 42 })), "a renamed account reusing the login");
        assert!(me.wrote(&json!({ "username": "railyard-bot" })));
        assert!(!me.wrote(&json!({ "login": "mallory", "id": 7 })));
        assert!(!me.wrote(&Value::Null));
        let nobody = Identity { id: None, login: Some(String::new()) };
        assert!(!nobody.wrote(&json!({ "login": "" })), "an empty login matches nothing");
    }

    #[test]
    fn a_rate_limit_is_told_from_each_forges_headers_and_so_is_how_long_to_wait() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().expect("header"));
            }
            headers
        };
        let now = 1_700_000_000;
        let seconds = |secs| Some(Some(Duration::from_secs(secs)));
        // GitHub's primary limit: 403 (or 429) with nothing remaining and the reset in epoch seconds.
        let github = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000042")]);
        assert_eq!(rate_limit(403, &github, now), seconds(42));
        assert_eq!(rate_limit(429, &github, now), seconds(42));
        assert_eq!(rate_limit(403, &github, now + 100), seconds(0), "a reset already past: no wait");
        // GitHub's secondary limit, GitLab and proxies: Retry-After.
        assert_eq!(rate_limit(403, &headers(&[("retry-after", "30")]), now), seconds(30));
        assert_eq!(rate_limit(429, &headers(&[("retry-after", "7")]), now), seconds(7));
        assert_eq!(rate_limit(429, &headers(&[("ratelimit-reset", "1700000005")]), now), seconds(5));
        assert_eq!(rate_limit(429, &headers(&[]), now), Some(None), "limited, without saying until when");
        // A 403 with requests left is about the token's rights; other statuses are not the limit.
        assert_eq!(rate_limit(403, &headers(&[("x-ratelimit-remaining", "4999")]), now), None);
        assert_eq!(rate_limit(403, &headers(&[]), now), None);
        assert_eq!(rate_limit(401, &github, now), None);
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
}
