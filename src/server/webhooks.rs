//! Webhook verification for GitHub, GitLab, Gitea/Forgejo and a generic HMAC sender: the signature or token checked
//! in constant time, then the event read exactly as each forge sends it. Pure: the handler does the I/O.

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::daemon::previews::PullRequestAction;
use crate::previews::PullRequest;

/// The senders railyard understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (which sends Gitea's headers too).
    Gitea,
    /// Any sender that signs the body with HMAC-SHA256 in `X-Railyard-Signature: sha256=<hex>`.
    Generic,
}

impl Forge {
    pub fn parse(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            "generic" => Some(Forge::Generic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
            Forge::Generic => "generic",
        }
    }
}

/// What to answer, and the push or pull-request event it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: StatusCode,
    pub event: String,
    /// An authenticated push: the environments following it reconcile.
    pub pushed: Option<Pushed>,
    /// An authenticated pull-request event: the previews worker hears of it.
    pub pull_request: Option<(PullRequestAction, PullRequest)>,
    pub reason: String,
}

/// What an authenticated push was to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Branch(String),
    /// A push event without a `ref` (a generic hook fired by hand): taken as a push to the tracked branch.
    Unspecified,
}

impl Verdict {
    fn new(status: StatusCode, event: &str, reason: impl Into<String>) -> Verdict {
        Verdict { status, event: event.to_owned(), pushed: None, pull_request: None, reason: reason.into() }
    }

    fn pushed(event: &str, pushed: Pushed) -> Verdict {
        Verdict {
            status: StatusCode::ACCEPTED,
            event: event.to_owned(),
            pushed: Some(pushed),
            pull_request: None,
            reason: "sync queued".to_owned(),
        }
    }

    pub fn accepted(&self) -> bool {
        self.status.is_success()
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// Judges one delivery to `forge`: its signature, its event, and which branch a push was to.
pub fn judge(forge: Forge, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let event = match forge {
        Forge::GitHub => header("x-github-event"),
        Forge::GitLab => header("x-gitlab-event"),
        Forge::Gitea => header("x-gitea-event").or(header("x-forgejo-event")),
        Forge::Generic => header("x-railyard-event"),
    }
    .unwrap_or(if forge == Forge::Generic { "push" } else { "" })
    .to_owned();
    let signed = match forge {
        Forge::GitHub => {
            hmac_matches(secret, body, header("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")))
        }
        Forge::Gitea => hmac_matches(secret, body, header("x-gitea-signature").or(header("x-forgejo-signature"))),
        Forge::Generic => {
            hmac_matches(secret, body, header("x-railyard-signature").and_then(|s| s.strip_prefix("sha256=")))
        }
        Forge::GitLab => header("x-gitlab-token").is_some_and(|token| bool::from(token.as_bytes().ct_eq(secret))),
    };
    if !signed {
        return Verdict::new(StatusCode::UNAUTHORIZED, &event, "missing or wrong signature");
    }
    let is_push = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Generic => event == "push",
        Forge::GitLab => event == "Push Hook",
    };
    let is_pull_request = match forge {
        Forge::GitHub | Forge::Gitea => event == "pull_request",
        Forge::GitLab => event == "Merge Request Hook",
        Forge::Generic => false,
    };
    if is_pull_request {
        return pull_request_verdict(forge, &event, body);
    }
    if !is_push {
        return if matches!(event.as_str(), "ping" | "Test Hook" | "System Hook") || event.is_empty() {
            Verdict::new(StatusCode::OK, &event, "pong")
        } else {
            Verdict::new(StatusCode::ACCEPTED, &event, format!("ignored: `{event}` events do not change the config"))
        };
    }
    let push: Push = match serde_json::from_slice(body) {
        Ok(push) => push,
        Err(error) => {
            return Verdict::new(StatusCode::BAD_REQUEST, &event, format!("body is not a push event: {error}"));
        }
    };
    match push.reference.as_deref().map(|reference| reference.strip_prefix("refs/heads/")) {
        Some(Some(branch)) => Verdict::pushed(&event, Pushed::Branch(branch.to_owned())),
        Some(None) => Verdict::new(
            StatusCode::ACCEPTED,
            &event,
            format!("ignored: {} is not a branch", push.reference.as_deref().unwrap_or_default()),
        ),
        None => Verdict::pushed(&event, Pushed::Unspecified),
    }
}

/// An authenticated pull-request event read: what happened, to which pull request.
fn pull_request_verdict(forge: Forge, event: &str, body: &[u8]) -> Verdict {
    let read = match forge {
        Forge::GitLab => serde_json::from_slice::<GitLabMergeRequest>(body).map(GitLabMergeRequest::read),
        _ => serde_json::from_slice::<PullRequestHook>(body).map(|hook| hook.read(forge)),
    };
    match read {
        Err(error) => {
            Verdict::new(StatusCode::BAD_REQUEST, event, format!("body is not a pull request event: {error}"))
        }
        Ok(None) => Verdict::new(StatusCode::ACCEPTED, event, "ignored: this action changes no preview"),
        Ok(Some((action, pr))) => Verdict {
            status: StatusCode::ACCEPTED,
            event: event.to_owned(),
            pushed: None,
            reason: format!("pull request #{} {}", pr.number, format!("{action:?}").to_lowercase()),
            pull_request: Some((action, pr)),
        },
    }
}

/// GitHub's and Gitea's (Forgejo's) `pull_request` event: the same shape, with their own action names.
#[derive(Deserialize)]
struct PullRequestHook {
    action: String,
    pull_request: PullRequestBody,
}

#[derive(Deserialize)]
struct PullRequestBody {
    number: u64,
    #[serde(default)]
    title: String,
    user: Option<Account>,
    head: Side,
    base: Side,
    #[serde(default)]
    labels: Vec<Label>,
    /// GitHub's word on the author's relation to the repository (Gitea sends none).
    author_association: Option<String>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(alias = "username")]
    login: String,
}

#[derive(Deserialize)]
struct Side {
    #[serde(default)]
    sha: String,
    #[serde(rename = "ref", default)]
    reference: String,
    /// Absent when a fork was deleted: then it is not the base repository.
    repo: Option<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Label {
    #[serde(alias = "title")]
    name: String,
}

impl PullRequestHook {
    fn read(self, forge: Forge) -> Option<(PullRequestAction, PullRequest)> {
        let action = match self.action.as_str() {
            "opened" | "reopened" => PullRequestAction::Opened,
            "synchronize" | "synchronized" => PullRequestAction::Updated,
            "closed" => PullRequestAction::Closed,
            "labeled" | "unlabeled" | "label_updated" | "label_cleared" => PullRequestAction::Labeled,
            _ => return None,
        };
        let pr = self.pull_request;
        let base = pr.base.repo.map(|repo| repo.full_name);
        let head = pr.head.repo.map(|repo| repo.full_name);
        Some((
            action,
            PullRequest {
                number: pr.number,
                title: pr.title,
                author: pr.user.map(|user| user.login).unwrap_or_default(),
                head_sha: pr.head.sha,
                head_branch: pr.head.reference,
                from_fork: head.is_none() || head != base,
                labels: pr.labels.into_iter().map(|label| label.name).collect(),
                // Only GitHub says it in the payload; for Gitea the forge's list is asked when one is configured.
                author_trusted: forge == Forge::GitHub
                    && crate::forge::github_association_trusted(pr.author_association.as_deref()),
                approved_sha: None,
                pushed_ms: crate::clock::now_ms(),
            },
        ))
    }
}

/// GitLab's `Merge Request Hook`.
#[derive(Deserialize)]
struct GitLabMergeRequest {
    user: Option<Account>,
    object_attributes: MergeRequestAttributes,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct MergeRequestAttributes {
    iid: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    source_branch: String,
    source_project_id: Option<u64>,
    target_project_id: Option<u64>,
    last_commit: Option<LastCommit>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

impl GitLabMergeRequest {
    fn read(self) -> Option<(PullRequestAction, PullRequest)> {
        let mr = self.object_attributes;
        let action = match mr.action.as_str() {
            "open" | "reopen" => PullRequestAction::Opened,
            "update" => PullRequestAction::Updated,
            "close" | "merge" => PullRequestAction::Closed,
            _ => return None,
        };
        Some((
            action,
            PullRequest {
                number: mr.iid,
                title: mr.title,
                author: self.user.map(|user| user.login).unwrap_or_default(),
                head_sha: mr.last_commit.map(|commit| commit.id).unwrap_or_default(),
                head_branch: mr.source_branch,
                from_fork: mr.source_project_id.is_none() || mr.source_project_id != mr.target_project_id,
                labels: self.labels.into_iter().map(|label| label.name).collect(),
                // The payload does not say whether the author may push; the forge's list is asked when configured.
                author_trusted: false,
                approved_sha: None,
                pushed_ms: crate::clock::now_ms(),
            },
        ))
    }
}

/// The delivery's id, which the sender keeps across retries: GitHub's `X-GitHub-Delivery`, Gitea's
/// `X-Gitea-Delivery` (Forgejo's `X-Forgejo-Delivery`), GitLab's `X-Gitlab-Event-UUID`, the generic sender's
/// `X-Railyard-Delivery`. At most 200 visible ASCII characters; anything else is no id.
pub fn delivery_id(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match forge {
        Forge::GitHub => &["x-github-delivery"],
        Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
        Forge::GitLab => &["x-gitlab-event-uuid"],
        Forge::Generic => &["x-railyard-delivery"],
    };
    names
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
}

/// Compares the HMAC-SHA256 of `body` with a hex signature in constant time.
fn hmac_matches(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(expected) = signature.and_then(|hex_text| hex::decode(hex_text).ok()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` of `body`, as GitHub and the generic sender write it; for tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")));
        }
        map
    }

    #[test]
    fn github_documented_signature_example() {
        // From GitHub's docs "Validating webhook deliveries".
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, body), signature);
        let verdict = judge(
            Forge::GitHub,
            &headers(&[("x-github-event", "ping"), ("x-hub-signature-256", signature)]),
            body,
            SECRET,
        );
        assert_eq!(verdict.status, StatusCode::OK);
    }

    #[test]
    fn bad_missing_or_malformed_signatures_are_401() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        for signature in ["", "sha256=", "sha256=zz", "sha1=abcd", &sign(b"other secret", body)] {
            let verdict = judge(
                Forge::GitHub,
                &headers(&[("x-github-event", "push"), ("x-hub-signature-256", signature)]),
                body,
                SECRET,
            );
            assert_eq!((verdict.status, verdict.pushed), (StatusCode::UNAUTHORIZED, None), "{signature}");
        }
        let verdict = judge(
            Forge::GitLab,
            &headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "wrong")]),
            body,
            SECRET,
        );
        assert_eq!(verdict.status, StatusCode::UNAUTHORIZED);
        let verdict = judge(Forge::Gitea, &headers(&[("x-gitea-event", "push")]), body, SECRET);
        assert_eq!(verdict.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_push_names_its_branch_and_a_tag_is_ignored() {
        let judge_push = |body: &[u8]| {
            let signature = sign(SECRET, body);
            judge(Forge::Generic, &headers(&[("x-railyard-signature", &signature)]), body, SECRET)
        };
        let verdict = judge_push(br#"{"ref":"refs/heads/feature/x"}"#);
        assert_eq!((verdict.status, verdict.pushed), (StatusCode::ACCEPTED, Some(Pushed::Branch("feature/x".into()))));
        let verdict = judge_push(br#"{"ref":"refs/tags/v1"}"#);
        assert_eq!((verdict.status, verdict.pushed), (StatusCode::ACCEPTED, None));
        assert_eq!(verdict.reason, "ignored: refs/tags/v1 is not a branch");
        assert_eq!(judge_push(b"{}").pushed, Some(Pushed::Unspecified));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forge").join(name);
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    fn signed(forge: Forge, event: &'static str, body: &[u8]) -> Verdict {
        let signature = sign(SECRET, body);
        let headers = match forge {
            Forge::GitHub => headers(&[("x-github-event", event), ("x-hub-signature-256", &signature)]),
            Forge::Gitea => headers(&[("x-gitea-event", event), ("x-gitea-signature", &signature[7..])]),
            _ => headers(&[("x-gitlab-event", event), ("x-gitlab-token", "It's a Secret to Everybody")]),
        };
        judge(forge, &headers, body, SECRET)
    }

    #[test]
    fn pull_request_events_of_each_forge_are_read_from_their_documented_payloads() {
        let github = signed(Forge::GitHub, "pull_request", &fixture("github-pull-request-opened.json"));
        let (action, pr) = github.pull_request.expect("a pull request event");
        assert_eq!((github.status, action), (StatusCode::ACCEPTED, PullRequestAction::Opened));
        assert_eq!((pr.number, pr.head_sha.as_str()), (2, "ec26c3e57ca3a959ca5aad62de7213c562f8c821"));
        assert_eq!((pr.head_branch.as_str(), pr.author.as_str(), pr.from_fork), ("changes", "Codertocat", false));
        assert!(pr.author_trusted, "the documented payload's author is the repository's OWNER");

        let gitlab = signed(Forge::GitLab, "Merge Request Hook", &fixture("gitlab-merge-request-hook.json"));
        let (action, mr) = gitlab.pull_request.expect("a merge request event");
        assert_eq!(action, PullRequestAction::Opened);
        assert_eq!((mr.number, mr.head_sha.as_str()), (1, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"));
        assert_eq!((mr.head_branch.as_str(), mr.author.as_str(), mr.from_fork), ("ms-viewport", "root", false));
        assert_eq!(mr.labels, ["API"]);
        assert!(!mr.author_trusted, "GitLab's payload does not say; the forge's list does");

        let gitea = signed(Forge::Gitea, "pull_request", &fixture("gitea-pull-request-synchronized.json"));
        let (action, pr) = gitea.pull_request.expect("a pull request event");
        assert_eq!((action, pr.number), (PullRequestAction::Updated, 1));
        assert!(pr.from_fork, "the head lives in contributor/webhooks, the base in gitea/webhooks");
        assert_eq!(pr.labels, ["preview"]);
        assert!(!pr.author_trusted, "Gitea's payload does not say; the forge's list does");
    }

    #[test]
    fn only_github_owners_members_and_collaborators_are_trusted_by_the_payload() {
        let body = String::from_utf8(fixture("github-pull-request-opened.json")).expect("utf-8");
        for (association, trusted) in [
            ("OWNER", true),
            ("MEMBER", true),
            ("COLLABORATOR", true),
            ("CONTRIBUTOR", false),
            ("FIRST_TIME_CONTRIBUTOR", false),
            ("NONE", false),
        ] {
            let changed = body
                .replace("\"author_association\": \"OWNER\"", &format!("\"author_association\": \"{association}\""));
            let (_, pr) = signed(Forge::GitHub, "pull_request", changed.as_bytes()).pull_request.expect("an event");
            assert_eq!(pr.author_trusted, trusted, "{association}");
        }
        let without = body.replace("\"author_association\": \"OWNER\",", "");
        let (_, pr) = signed(Forge::GitHub, "pull_request", without.as_bytes()).pull_request.expect("an event");
        assert!(!pr.author_trusted, "no association, no trust");
        // A Gitea payload claiming GitHub's field is not believed: Gitea never sends it.
        let gitea = String::from_utf8(fixture("gitea-pull-request-synchronized.json")).expect("utf-8");
        let forged = gitea.replacen("\"pull_request\": {", "\"pull_request\": { \"author_association\": \"OWNER\",", 1);
        assert_ne!(forged, gitea, "the fixture has a pull_request object");
        let (_, pr) = signed(Forge::Gitea, "pull_request", forged.as_bytes()).pull_request.expect("an event");
        assert!(!pr.author_trusted);
    }

    #[test]
    fn every_pull_request_action_maps_and_others_are_ignored() {
        let body = String::from_utf8(fixture("github-pull-request-opened.json")).expect("utf-8");
        for (action, expected) in [
            ("reopened", Some(PullRequestAction::Opened)),
            ("synchronize", Some(PullRequestAction::Updated)),
            ("closed", Some(PullRequestAction::Closed)),
            ("labeled", Some(PullRequestAction::Labeled)),
            ("unlabeled", Some(PullRequestAction::Labeled)),
            ("edited", None),
            ("assigned", None),
        ] {
            let changed = body.replace("\"action\": \"opened\"", &format!("\"action\": \"{action}\""));
            let verdict = signed(Forge::GitHub, "pull_request", changed.as_bytes());
            assert_eq!(verdict.status, StatusCode::ACCEPTED, "{action}");
            assert_eq!(verdict.pull_request.map(|(action, _)| action), expected, "{action}");
        }
        let gitlab = String::from_utf8(fixture("gitlab-merge-request-hook.json")).expect("utf-8");
        for (action, expected) in [("merge", PullRequestAction::Closed), ("update", PullRequestAction::Updated)] {
            let changed = gitlab.replace("\"action\": \"open\"", &format!("\"action\": \"{action}\""));
            let verdict = signed(Forge::GitLab, "Merge Request Hook", changed.as_bytes());
            assert_eq!(verdict.pull_request.map(|(action, _)| action), Some(expected), "{action}");
        }
    }

    #[test]
    fn hostile_pull_request_payloads_are_400_and_unsigned_ones_401() {
        for body in [
            &b"{}"[..],
            b"[]",
            b"{\"action\":\"opened\"}",
            b"{\"action\":\"opened\",\"pull_request\":{\"number\":-1}}",
            b"\xff",
        ] {
            let verdict = signed(Forge::GitHub, "pull_request", body);
            assert_eq!((verdict.status, verdict.pull_request), (StatusCode::BAD_REQUEST, None), "{body:?}");
        }
        let body = fixture("github-pull-request-opened.json");
        let verdict = judge(
            Forge::GitHub,
            &headers(&[("x-github-event", "pull_request"), ("x-hub-signature-256", "sha256=00")]),
            &body,
            SECRET,
        );
        assert_eq!((verdict.status, verdict.pull_request), (StatusCode::UNAUTHORIZED, None));
    }

    #[test]
    fn each_forge_names_its_delivery_id() {
        let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        for (forge, header) in [
            (Forge::GitHub, "x-github-delivery"),
            (Forge::Gitea, "x-gitea-delivery"),
            (Forge::Gitea, "x-forgejo-delivery"),
            (Forge::GitLab, "x-gitlab-event-uuid"),
            (Forge::Generic, "x-railyard-delivery"),
        ] {
            assert_eq!(delivery_id(forge, &headers(&[(header, id)])).as_deref(), Some(id), "{header}");
        }
        assert_eq!(delivery_id(Forge::GitHub, &headers(&[("x-gitea-delivery", id)])), None, "another forge's header");
        assert_eq!(delivery_id(Forge::GitHub, &headers(&[("x-github-delivery", "  ")])), None);
        assert_eq!(delivery_id(Forge::GitHub, &headers(&[("x-github-delivery", &"a".repeat(201))])), None);
        assert_eq!(delivery_id(Forge::GitHub, &headers(&[("x-github-delivery", "a b")])), None);
    }

    #[test]
    fn a_signed_body_that_is_not_json_is_400() {
        let body = b"not json";
        let signature = sign(SECRET, body);
        let verdict = judge(
            Forge::GitHub,
            &headers(&[("x-github-event", "push"), ("x-hub-signature-256", &signature)]),
            body,
            SECRET,
        );
        assert_eq!(verdict.status, StatusCode::BAD_REQUEST);
    }
}
