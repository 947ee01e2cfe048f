//! A fake forge for tests (issue 14), on loopback: the parts of the GitHub, GitLab and Gitea APIs that previews use,
//! in each forge's own shapes (paths, field names, paging headers, status states), taken from their documented
//! examples. It keeps open pull requests that a test opens and closes, records the commit statuses and comments
//! railyard posts, pages listings (`per_page`/`limit`, `Link: rel="next"`, GitLab's `X-Next-Page` and `X-Total`,
//! Gitea's `X-Total-Count`), and can be told to fail the next requests with 500.
//!
//! It also knows who is who: `GET /user` names the token's user ([`SELF_LOGIN`]), comments carry their authors
//! (another user can write one with [`FakeForge::comment_as`]), each pull request has an author whose right to push
//! is given by [`FakeForge::set_access`] (GitHub's `author_association`, GitLab's project members, Gitea's
//! collaborators), every request's headers are kept, and [`FakeForge::redirect_to`] answers everything with a 302
//! to another address.
//!
//! It is as strict as the forges: every request must carry the token ([`TOKEN`], or [`FakeForge::expect_token`]) in
//! a form the forge documents (GitHub `Authorization: Bearer` or `token`, GitLab `PRIVATE-TOKEN` or
//! `Authorization: Bearer`, Gitea `Authorization: token` or `Bearer`), or it answers 401 in the forge's own error
//! shape. Closed and merged pull requests stay listed under their state, and a listing honours `state` as the forge
//! does (GitHub and Gitea: `open` unless asked otherwise; GitLab: every state unless asked `opened`); a commit status
//! with a state the forge does not know is refused (GitHub and Gitea 422, GitLab 400). It can be told to refuse
//! requests ([`FakeForge::refuse`]: 401, 403, 422, the rate limit in each forge's headers), to announce totals that
//! the pages do not hold ([`FakeForge::miscount_totals`]), and to let its token edit anyone's comment, as a
//! maintainer's can ([`FakeForge::token_may_edit_any_comment`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which forge the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    GitHub,
    GitLab,
    Gitea,
}

/// The token the fake accepts unless told another ([`FakeForge::expect_token`]).
pub const TOKEN: &str = "forge-token-canary-51c3";

/// How [`FakeForge::refuse`] answers, each in the forge's own status, headers and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401, as for a wrong token.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden,
    /// 422 (GitLab: 400) with the forge's validation message, as for a status on a commit the forge does not have.
    Unprocessable,
    /// The rate limit: GitHub 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch seconds); GitLab
    /// and Gitea 429 with `Retry-After` (seconds). It resets this many seconds from now.
    RateLimited { reset_in_secs: u64 },
}

/// A pull request of the fake (open unless [`FakeForge::close`]d or [`FakeForge::merge`]d).
#[derive(Clone, Debug)]
pub struct FakePullRequest {
    pub number: u64,
    pub sha: String,
    pub branch: String,
    pub fork: bool,
    pub labels: Vec<String>,
}

/// A commit status railyard posted: the sha, and the body as sent.
#[derive(Clone, Debug)]
pub struct PostedStatus {
    pub sha: String,
    pub body: Value,
}

/// The user the fake says the token belongs to, and who writes railyard's comments.
pub const SELF_LOGIN: &str = "railyard-bot";
/// Its numeric id (GitLab names note authors by id).
pub const SELF_ID: u64 = 41;

/// A comment as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeComment {
    pub id: u64,
    pub author: String,
    pub body: String,
}

#[derive(Default)]
struct Forge {
    /// Every pull request, open or not.
    open: BTreeMap<u64, FakePullRequest>,
    /// Pull requests no longer open: `closed` or `merged`.
    ended: BTreeMap<u64, &'static str>,
    /// The token every request must carry.
    token: String,
    /// Requests (`METHOD /path?query` containing the text) refused so many more times, and how.
    refusals: Vec<(String, usize, Refusal)>,
    /// Added to the total count headers (GitLab `X-Total`, Gitea `X-Total-Count`).
    total_offset: i64,
    /// The token may edit anyone's comment (a maintainer's token can).
    edits_any_comment: bool,
    statuses: Vec<PostedStatus>,
    /// Pull request number to its comments.
    comments: BTreeMap<u64, Vec<FakeComment>>,
    /// Pull request number to its author, when not the default (`octocat`; GitLab `admin`).
    authors: BTreeMap<u64, String>,
    /// Login to GitLab-style access level (30 developer, 40 maintainer, 50 owner); see [`FakeForge::set_access`].
    access: BTreeMap<String, u64>,
    /// Logins whose membership or collaborator lookups answer 500.
    failing_lookups: BTreeSet<String>,
    /// Every request answers 302 to this base (plus the request's path and query).
    redirect: Option<String>,
    /// Every request's headers, in order.
    headers: Vec<Vec<(String, String)>>,
    next_comment: u64,
    /// Comment id to its author's user id, where that is not [`user_id`] of the login (a lookalike account).
    ids: BTreeMap<u64, u64>,
    fail_next: usize,
    /// Requests that still succeed before the next one fails.
    fail_after: Option<usize>,
    /// Items per page, whatever the client asks for (so that tests page with few items).
    page_size: usize,
    requests: Vec<String>,
}

/// The fake forge, serving until dropped.
pub struct FakeForge {
    state: Arc<Mutex<Forge>>,
    speaks: Speaks,
    pub port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

const REPO: &str = "acme/shop";

impl FakeForge {
    pub fn start(speaks: Speaks) -> FakeForge {
        let state = Arc::new(Mutex::new(Forge {
            page_size: 2,
            next_comment: 100,
            token: TOKEN.to_owned(),
            ..Forge::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake forge");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("address").port();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().fallback(answer).with_state((Arc::clone(&state), speaks, port));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("the fake forge stopped"),
                    _ = stopped => {}
                }
            });
        });
        FakeForge { state, speaks, port, shutdown: Some(shutdown), thread: Some(thread) }
    }

    fn forge(&self) -> MutexGuard<'_, Forge> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The API base railyard is given (`--forge-url`).
    pub fn api(&self) -> String {
        match self.speaks {
            Speaks::GitHub => format!("http://127.0.0.1:{}", self.port),
            Speaks::GitLab => format!("http://127.0.0.1:{}/api/v4", self.port),
            Speaks::Gitea => format!("http://127.0.0.1:{}/api/v1", self.port),
        }
    }

    /// `--forge-repo`.
    pub fn repo(&self) -> &'static str {
        REPO
    }

    /// Opens (or updates, or reopens) a pull request.
    pub fn open(&self, pr: FakePullRequest) {
        let mut forge = self.forge();
        forge.ended.remove(&pr.number);
        forge.open.insert(pr.number, pr);
    }

    /// Closes pull request `number` unmerged; the forge still lists it under `state=closed`.
    pub fn close(&self, number: u64) {
        self.forge().ended.insert(number, "closed");
    }

    /// Merges pull request `number`; the forge still lists it as closed (GitLab: `merged`).
    pub fn merge(&self, number: u64) {
        self.forge().ended.insert(number, "merged");
    }

    /// Requests must carry `token` from now on.
    pub fn expect_token(&self, token: &str) {
        self.forge().token = token.to_owned();
    }

    /// The next `times` requests whose `METHOD /path?query` contains `matching` ("" for any) are refused.
    pub fn refuse(&self, matching: &str, times: usize, refusal: Refusal) {
        self.forge().refusals.push((matching.to_owned(), times, refusal));
    }

    /// The total count headers say `by` more (or fewer) items than the listing holds, as when pull requests open or
    /// close between the pages of one read.
    pub fn miscount_totals(&self, by: i64) {
        self.forge().total_offset = by;
    }

    /// The token may edit anyone's comment, as a maintainer's can: editing someone else's comment then succeeds
    /// instead of answering 403, so only the client's own care keeps it off.
    pub fn token_may_edit_any_comment(&self) {
        self.forge().edits_any_comment = true;
    }

    /// `login` comments `body` on pull request `number` under user id `id` (a lookalike of another user's login).
    pub fn comment_as_id(&self, number: u64, login: &str, id: u64, body: &str) {
        let mut forge = self.forge();
        forge.next_comment += 1;
        let comment_id = forge.next_comment;
        forge.ids.insert(comment_id, id);
        forge.comments.entry(number).or_default().push(FakeComment {
            id: comment_id,
            author: login.to_owned(),
            body: body.to_owned(),
        });
    }

    /// The next `count` requests answer 500.
    pub fn fail_next(&self, count: usize) {
        self.forge().fail_next = count;
    }

    /// After `successes` more requests, one answers 500 (the second page of a listing, say).
    pub fn fail_after(&self, successes: usize) {
        self.forge().fail_after = Some(successes);
    }

    pub fn statuses(&self) -> Vec<PostedStatus> {
        self.forge().statuses.clone()
    }

    /// The comments on pull request `number`.
    pub fn comments(&self, number: u64) -> Vec<String> {
        self.comments_with_authors(number).into_iter().map(|comment| comment.body).collect()
    }

    /// The comments on pull request `number`, with their ids and authors.
    pub fn comments_with_authors(&self, number: u64) -> Vec<FakeComment> {
        self.forge().comments.get(&number).cloned().unwrap_or_default()
    }

    /// `login` comments `body` on pull request `number` (someone else than railyard, say).
    pub fn comment_as(&self, number: u64, login: &str, body: &str) {
        let mut forge = self.forge();
        forge.next_comment += 1;
        let id = forge.next_comment;
        forge.comments.entry(number).or_default().push(FakeComment {
            id,
            author: login.to_owned(),
            body: body.to_owned(),
        });
    }

    /// Pull request `number` was opened by `login`.
    pub fn set_author(&self, number: u64, login: &str) {
        self.forge().authors.insert(number, login.to_owned());
    }

    /// `login`'s access to the repository, in GitLab's levels: GitHub says `COLLABORATOR` from 30 (write) and
    /// `CONTRIBUTOR` below; Gitea lists a collaborator from 30; GitLab answers the level itself (a member from 10).
    pub fn set_access(&self, login: &str, level: u64) {
        self.forge().access.insert(login.to_owned(), level);
    }

    /// Membership and collaborator lookups for `login` answer 500.
    pub fn fail_lookups_of(&self, login: &str) {
        self.forge().failing_lookups.insert(login.to_owned());
    }

    /// Every later request answers `302 Found` to `base` followed by the request's path and query.
    pub fn redirect_to(&self, base: &str) {
        self.forge().redirect = Some(base.trim_end_matches('/').to_owned());
    }

    /// Every request's headers (names lowercase), in the order received.
    pub fn request_headers(&self) -> Vec<Vec<(String, String)>> {
        self.forge().headers.clone()
    }

    /// Every request as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.forge().requests.clone()
    }
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Shared = (Arc<Mutex<Forge>>, Speaks, u16);

async fn answer(
    State((state, speaks, port)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut forge = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    forge.requests.push(format!("{method} {uri}"));
    forge.headers.push(
        headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
    );
    if let Some(base) = &forge.redirect {
        let location = format!("{base}{}", uri.path_and_query().map_or("/", |pq| pq.as_str()));
        return (StatusCode::FOUND, [(axum::http::header::LOCATION, location)], "").into_response();
    }
    if token_of(speaks, &headers).is_none_or(|token| token != forge.token) {
        return refused(speaks, port, Refusal::Unauthorized);
    }
    let line = format!("{method} {uri}");
    let refusal = forge.refusals.iter_mut().find(|(matching, times, _)| *times > 0 && line.contains(matching.as_str()));
    if let Some((_, times, refusal)) = refusal {
        *times -= 1;
        return refused(speaks, port, *refusal);
    }
    let planned_failure = match forge.fail_after {
        Some(0) => {
            forge.fail_after = None;
            true
        }
        Some(left) => {
            forge.fail_after = Some(left - 1);
            false
        }
        None => false,
    };
    if forge.fail_next > 0 || planned_failure {
        forge.fail_next = forge.fail_next.saturating_sub(1);
        return (StatusCode::INTERNAL_SERVER_ERROR, "{\"message\":\"Server Error\"}").into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let page: usize = query.get("page").and_then(|page| page.parse().ok()).unwrap_or(1).max(1);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let parts: Vec<&str> = match speaks {
        Speaks::GitHub => parts,
        Speaks::GitLab => parts.get(2..).map(<[&str]>::to_vec).unwrap_or_default(),
        Speaks::Gitea => parts.get(2..).map(<[&str]>::to_vec).unwrap_or_default(),
    };
    let gitlab_project = "acme%2Fshop";
    match (speaks, &method, parts.as_slice()) {
        (_, &Method::GET, ["user"]) => {
            let user = match speaks {
                Speaks::GitLab => json!({ "id": SELF_ID, "username": SELF_LOGIN, "name": "railyard" }),
                _ => json!({ "id": SELF_ID, "login": SELF_LOGIN, "type": "User" }),
            };
            (StatusCode::OK, axum::Json(user)).into_response()
        }
        (Speaks::GitLab, &Method::GET, ["projects", project, "merge_requests"]) if *project == gitlab_project => {
            let Some(states) = listed_states(speaks, query.get("state").map(String::as_str)) else {
                return (StatusCode::BAD_REQUEST, "{\"error\":\"state does not have a valid value\"}").into_response();
            };
            let items: Vec<Value> = forge
                .open
                .values()
                .filter(|pr| states.contains(&state_of(&forge, speaks, pr.number)))
                .map(|pr| gitlab_merge_request(&forge, pr))
                .collect();
            paged(&forge, speaks, port, path, &query, page, items)
        }
        (Speaks::GitLab, &Method::GET, ["projects", project, "members", "all", id]) if *project == gitlab_project => {
            let login = forge
                .access
                .keys()
                .chain(forge.failing_lookups.iter())
                .find(|login| user_id(login).to_string() == *id)
                .cloned();
            match login {
                Some(login) if forge.failing_lookups.contains(&login) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "{\"message\":\"Server Error\"}").into_response()
                }
                Some(login) => {
                    let level = forge.access.get(&login).copied().unwrap_or(0);
                    let member = json!({ "id": user_id(&login), "username": login, "access_level": level });
                    (StatusCode::OK, axum::Json(member)).into_response()
                }
                None => (StatusCode::NOT_FOUND, "{\"message\":\"404 Not found\"}").into_response(),
            }
        }
        (Speaks::Gitea, &Method::GET, ["repos", owner, name, "collaborators", login])
            if format!("{owner}/{name}") == REPO =>
        {
            if forge.failing_lookups.contains(*login) {
                (StatusCode::INTERNAL_SERVER_ERROR, "{\"message\":\"Server Error\"}").into_response()
            } else if forge.access.get(*login).is_some_and(|level| *level >= 30) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response()
            }
        }
        (Speaks::GitLab, &Method::POST, ["projects", _, "statuses", sha]) => {
            let known = ["pending", "running", "success", "failed", "canceled", "skipped"];
            if !body["state"].as_str().is_some_and(|state| known.contains(&state)) {
                return (StatusCode::BAD_REQUEST, "{\"error\":\"state does not have a valid value\"}").into_response();
            }
            forge.statuses.push(PostedStatus { sha: (*sha).to_owned(), body: body.clone() });
            (StatusCode::CREATED, axum::Json(json!({ "id": 1, "status": body["state"] }))).into_response()
        }
        (Speaks::GitLab, &Method::GET, ["projects", _, "merge_requests", number, "notes"]) => {
            let items = comment_items(&forge, speaks, number);
            paged(&forge, speaks, port, path, &query, page, items)
        }
        (Speaks::GitLab, &Method::POST, ["projects", _, "merge_requests", number, "notes"]) => {
            create_comment(&mut forge, number, &body)
        }
        (Speaks::GitLab, &Method::PUT, ["projects", _, "merge_requests", number, "notes", id]) => {
            edit_comment(&mut forge, number, id, &body)
        }
        (_, &Method::GET, ["repos", owner, name, "pulls"]) if format!("{owner}/{name}") == REPO => {
            let Some(states) = listed_states(speaks, query.get("state").map(String::as_str)) else {
                return refused(speaks, port, Refusal::Unprocessable);
            };
            let items: Vec<Value> = forge
                .open
                .values()
                .filter(|pr| states.contains(&state_of(&forge, speaks, pr.number)))
                .map(|pr| pull_request(&forge, speaks, pr))
                .collect();
            paged(&forge, speaks, port, path, &query, page, items)
        }
        (_, &Method::POST, ["repos", _, _, "statuses", sha]) => {
            let known = match speaks {
                Speaks::GitHub => &["error", "failure", "pending", "success"][..],
                _ => &["pending", "success", "error", "failure", "warning"][..],
            };
            if !body["state"].as_str().is_some_and(|state| known.contains(&state)) {
                return refused(speaks, port, Refusal::Unprocessable);
            }
            forge.statuses.push(PostedStatus { sha: (*sha).to_owned(), body: body.clone() });
            (StatusCode::CREATED, axum::Json(json!({ "id": 1, "state": body["state"] }))).into_response()
        }
        (_, &Method::GET, ["repos", _, _, "issues", number, "comments"]) => {
            let items = comment_items(&forge, speaks, number);
            paged(&forge, speaks, port, path, &query, page, items)
        }
        (_, &Method::POST, ["repos", _, _, "issues", number, "comments"]) => create_comment(&mut forge, number, &body),
        (_, &Method::PATCH, ["repos", _, _, "issues", "comments", id]) => {
            let owner = forge
                .comments
                .iter()
                .find(|(_, comments)| comments.iter().any(|comment| comment.id.to_string() == *id))
                .map(|(number, _)| number.to_string());
            match owner {
                Some(number) => edit_comment(&mut forge, &number, id, &body),
                None => (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response(),
            }
        }
        _ => (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response(),
    }
}

/// One page of `items`, with the forge's paging headers.
fn paged(
    forge: &Forge,
    speaks: Speaks,
    port: u16,
    path: &str,
    query: &BTreeMap<String, String>,
    page: usize,
    items: Vec<Value>,
) -> Response {
    let size = forge.page_size;
    let pages = items.len().div_ceil(size).max(1);
    let slice: Vec<Value> = items.iter().skip((page - 1) * size).take(size).cloned().collect();
    let mut headers = HeaderMap::new();
    if page < pages {
        let mut next = query.clone();
        next.insert("page".to_owned(), (page + 1).to_string());
        let query = next.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let link = format!("<http://127.0.0.1:{port}{path}?{query}>; rel=\"next\"");
        match speaks {
            Speaks::GitLab => {
                headers.insert("x-next-page", HeaderValue::from(page + 1));
            }
            _ => {
                headers.insert("link", HeaderValue::from_str(&link).expect("link header"));
            }
        }
    } else if speaks == Speaks::GitLab {
        headers.insert("x-next-page", HeaderValue::from_static(""));
    }
    let total = i64::try_from(items.len()).unwrap_or(i64::MAX).saturating_add(forge.total_offset).max(0);
    match speaks {
        Speaks::GitLab => {
            headers.insert("x-total", HeaderValue::from(total));
        }
        Speaks::Gitea => {
            headers.insert("x-total-count", HeaderValue::from(total));
        }
        Speaks::GitHub => {}
    }
    (StatusCode::OK, headers, axum::Json(Value::Array(slice))).into_response()
}

/// A fake user's numeric id: railyard's own is [`SELF_ID`], anyone else's is made from the login.
pub fn user_id(login: &str) -> u64 {
    if login == SELF_LOGIN {
        return SELF_ID;
    }
    login.bytes().fold(1000, |id: u64, byte| id.wrapping_mul(31).wrapping_add(u64::from(byte)) % 1_000_000_007)
}

/// A comment's author as each forge writes it: GitLab's `author` with `id` and `username`, GitHub's and Gitea's
/// `user` with `login` and `id`.
fn comment_items(forge: &Forge, speaks: Speaks, number: &str) -> Vec<Value> {
    let number: u64 = number.parse().unwrap_or(0);
    forge
        .comments
        .get(&number)
        .map(|all| {
            all.iter()
                .map(|comment| match speaks {
                    Speaks::GitLab => json!({ "id": comment.id, "body": comment.body, "system": false,
                        "author": { "id": author_id(forge, comment), "username": comment.author } }),
                    _ => json!({ "id": comment.id, "body": comment.body,
                        "user": { "login": comment.author, "id": author_id(forge, comment) } }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Comments railyard writes are written by the token's user.
fn create_comment(forge: &mut Forge, number: &str, body: &Value) -> Response {
    let number: u64 = number.parse().unwrap_or(0);
    forge.next_comment += 1;
    let id = forge.next_comment;
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    forge.comments.entry(number).or_default().push(FakeComment {
        id,
        author: SELF_LOGIN.to_owned(),
        body: text.clone(),
    });
    (StatusCode::CREATED, axum::Json(json!({ "id": id, "body": text }))).into_response()
}

/// Edits a comment; like the real forges, only its author may (anyone else gets 403).
fn edit_comment(forge: &mut Forge, number: &str, id: &str, body: &Value) -> Response {
    let number: u64 = number.parse().unwrap_or(0);
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let (ids, edits_any_comment) = (forge.ids.clone(), forge.edits_any_comment);
    let Some(comment) =
        forge.comments.get_mut(&number).and_then(|all| all.iter_mut().find(|comment| comment.id.to_string() == id))
    else {
        return (StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response();
    };
    let author = ids.get(&comment.id).copied().unwrap_or_else(|| user_id(&comment.author));
    if author != SELF_ID && !edits_any_comment {
        return (StatusCode::FORBIDDEN, "{\"message\":\"Forbidden\"}").into_response();
    }
    comment.body = text.clone();
    (StatusCode::OK, axum::Json(json!({ "id": comment.id, "body": text }))).into_response()
}

/// A pull request as GitHub's and Gitea's `GET /repos/{owner}/{repo}/pulls` list it (GitHub adds the author's
/// `author_association`).
fn pull_request(forge: &Forge, speaks: Speaks, pr: &FakePullRequest) -> Value {
    let head_repo = if pr.fork { "mallory/shop" } else { REPO };
    let author = forge.authors.get(&pr.number).cloned().unwrap_or_else(|| "octocat".to_owned());
    let association =
        if forge.access.get(&author).is_some_and(|level| *level >= 30) { "COLLABORATOR" } else { "CONTRIBUTOR" };
    let ended = forge.ended.get(&pr.number).copied();
    let mut item = json!({
        "number": pr.number,
        "state": if ended.is_some() { "closed" } else { "open" },
        "merged": ended == Some("merged"),
        "title": format!("Change {}", pr.number),
        "user": { "login": author, "id": user_id(&author) },
        "labels": pr.labels.iter().map(|name| json!({ "name": name })).collect::<Vec<_>>(),
        "head": { "label": format!("octocat:{}", pr.branch), "ref": pr.branch, "sha": pr.sha, "repo": { "full_name": head_repo } },
        "base": { "label": "octocat:main", "ref": "main", "repo": { "full_name": REPO } },
    });
    if speaks == Speaks::GitHub {
        item["author_association"] = json!(association);
    }
    item
}

/// A merge request as GitLab's `GET /projects/:id/merge_requests` lists it.
fn gitlab_merge_request(forge: &Forge, pr: &FakePullRequest) -> Value {
    let author = forge.authors.get(&pr.number).cloned().unwrap_or_else(|| "admin".to_owned());
    json!({
        "id": 1000 + pr.number,
        "iid": pr.number,
        "project_id": 3,
        "title": format!("Change {}", pr.number),
        "state": state_of(forge, Speaks::GitLab, pr.number),
        "author": { "id": user_id(&author), "username": author },
        "source_branch": pr.branch,
        "target_branch": "main",
        "source_project_id": if pr.fork { 4 } else { 3 },
        "target_project_id": 3,
        "labels": pr.labels,
        "sha": pr.sha,
    })
}

/// The user id of a comment's author.
fn author_id(forge: &Forge, comment: &FakeComment) -> u64 {
    forge.ids.get(&comment.id).copied().unwrap_or_else(|| user_id(&comment.author))
}

/// The pull request's state in the forge's words (GitHub and Gitea say `closed` for merged ones too).
fn state_of(forge: &Forge, speaks: Speaks, number: u64) -> &'static str {
    match (speaks, forge.ended.get(&number).copied()) {
        (Speaks::GitLab, None) => "opened",
        (Speaks::GitLab, Some(ended)) => ended,
        (_, None) => "open",
        (_, Some(_)) => "closed",
    }
}

/// The states a listing's `state` parameter asks for, with the forge's default when it is absent; `None` for a
/// state the forge does not know.
fn listed_states(speaks: Speaks, asked: Option<&str>) -> Option<Vec<&'static str>> {
    match (speaks, asked) {
        (Speaks::GitLab, None | Some("all")) => Some(vec!["opened", "closed", "merged", "locked"]),
        (Speaks::GitLab, Some(state)) => {
            ["opened", "closed", "merged", "locked"].into_iter().find(|known| *known == state).map(|known| vec![known])
        }
        (_, None | Some("open")) => Some(vec!["open"]),
        (_, Some("closed")) => Some(vec!["closed"]),
        (_, Some("all")) => Some(vec!["open", "closed"]),
        (_, Some(_)) => None,
    }
}

/// The token a request carries, in the forms the forge documents; `None` when it carries none.
fn token_of(speaks: Speaks, headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let scheme = |scheme: &str| {
        header("authorization").and_then(|value| {
            let (given, token) = value.split_once(' ')?;
            given.eq_ignore_ascii_case(scheme).then(|| token.trim().to_owned())
        })
    };
    match speaks {
        Speaks::GitHub => scheme("Bearer").or_else(|| scheme("token")),
        Speaks::GitLab => header("private-token").map(str::to_owned).or_else(|| scheme("Bearer")),
        Speaks::Gitea => scheme("token").or_else(|| scheme("Bearer")),
    }
}

/// `refusal` in the forge's own status, headers and body.
fn refused(speaks: Speaks, port: u16, refusal: Refusal) -> Response {
    let github = |status: u16, message: &str| json!({ "message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string() });
    let gitea = |message: &str| json!({ "message": message, "url": format!("http://127.0.0.1:{port}/api/swagger") });
    let json = |status: StatusCode, body: Value| (status, axum::Json(body)).into_response();
    match (refusal, speaks) {
        (Refusal::Unauthorized, Speaks::GitHub) => json(StatusCode::UNAUTHORIZED, github(401, "Bad credentials")),
        (Refusal::Unauthorized, Speaks::GitLab) => {
            json(StatusCode::UNAUTHORIZED, json!({ "message": "401 Unauthorized" }))
        }
        (Refusal::Unauthorized, Speaks::Gitea) => json(StatusCode::UNAUTHORIZED, gitea("token is required")),
        (Refusal::Forbidden, Speaks::GitHub) => {
            json(StatusCode::FORBIDDEN, github(403, "Resource not accessible by personal access token"))
        }
        (Refusal::Forbidden, Speaks::GitLab) => json(StatusCode::FORBIDDEN, json!({ "message": "403 Forbidden" })),
        (Refusal::Forbidden, Speaks::Gitea) => json(
            StatusCode::FORBIDDEN,
            gitea("token does not have at least one of required scope(s): [write:repository]"),
        ),
        (Refusal::Unprocessable, Speaks::GitHub) => {
            let mut body = github(422, "Validation Failed");
            body["errors"] = json!([{ "resource": "Status", "code": "custom", "field": "state",
                "message": "No commit found for SHA" }]);
            json(StatusCode::UNPROCESSABLE_ENTITY, body)
        }
        (Refusal::Unprocessable, Speaks::GitLab) => {
            json(StatusCode::BAD_REQUEST, json!({ "message": "400 Bad request - No commit found for SHA" }))
        }
        (Refusal::Unprocessable, Speaks::Gitea) => {
            json(StatusCode::UNPROCESSABLE_ENTITY, gitea("the commit does not exist in this repository"))
        }
        (Refusal::RateLimited { reset_in_secs }, Speaks::GitHub) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let headers = [
                ("x-ratelimit-limit", "5000".to_owned()),
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-used", "5000".to_owned()),
                ("x-ratelimit-reset", (now + reset_in_secs).to_string()),
                ("x-ratelimit-resource", "core".to_owned()),
            ];
            let body = github(403, "API rate limit exceeded for user ID 41.");
            (StatusCode::FORBIDDEN, headers, axum::Json(body)).into_response()
        }
        (Refusal::RateLimited { reset_in_secs }, _) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", reset_in_secs.to_string())], "Retry later\n")
                .into_response()
        }
    }
}
